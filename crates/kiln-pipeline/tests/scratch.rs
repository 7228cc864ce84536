use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    version: u32,
    tasks: OMap<Task>,
}
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Task {
    image: Option<Spanned<String>>,
    steps: Vec<Spanned<String>>,
    env: Option<std::collections::HashMap<Spanned<String>, Spanned<String>>>,
    timeout: Option<kiln_pipeline::Duration>,
    retry: Option<u32>,
    allow_failure: Option<bool>,
}

fn opts() -> serde_saphyr::Options {
    serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! { max_depth: 32, max_aliases: 100, max_nodes: 100_000 },
    }
}

fn show<T: std::fmt::Debug + for<'a> Deserialize<'a>>(src: &str) {
    let r: Result<T, _> = serde_saphyr::from_str_with_options(src, opts());
    match r {
        Ok(v) => println!("OK {:?}\n", v),
        Err(e) => {
            let loc = e.location();
            println!("ERR {:?} @ {:?}\n   display: {}\n   debug: {:?}\n", loc.map(|l| (l.line(), l.column())), loc.map(|l| (l.span().byte_offset(), l.span().byte_len())), e, e);
        }
    }
}

#[test]
fn scratch() {
    show::<Option<Spanned<String>>>("");
    show::<Option<Spanned<String>>>("# c\n");
    show::<Option<Spanned<String>>>("---\n");
    show::<Spanned<String>>("  hello world\n");
    show::<Spanned<String>>("x: |\n  hello\n");
    show::<Vec<(String,String)>>("a: b\nc: d\n");
    show::<std::collections::HashMap<Spanned<String>,String>>("a: b\nc: d\n");
    show::<File>("version: 1\ntasks:\n  a:\n    imgae: x\n");
    show::<File>("tasks:\n  a:\n    image: x\n");
    show::<File>("version: 1\ntasks:\n  a:\n    image: x\n");
    show::<File>("version: 1\ntasks:\n  a:\n    image: x\n    steps: []\n    timeout: 5x\n");
    show::<File>("version: 1\ntasks:\n  a:\n    image: x\n    steps: []\n    retry: -1\n");
    show::<File>("version: 1\ntasks:\n  a:\n    image: x\n    steps: []\n    allow-failure: maybe\n");
    show::<File>("version: 1\ntasks:\n  a:\n    image: x\n    steps: []\n    image: y\n");
    show::<File>("version: 1\ntasks:\n  a:\n    image: x\n    steps: [a, b\n");
    show::<File>("version: 1\ntasks:\n  a:\n    image: [x]\n    steps: []\n");
    show::<File>("version: 1\ntasks:\n  a:\n    image: \n    steps: []\n");
    show::<File>("version: 1\ntasks:\n  a:\n    image: 1.0\n    steps: [yes, 1.50, ~]\n");
    show::<File>("version: 1\ntasks:\n  a:\n    image: 1.0\n    steps: [yes, 1.50]\n    env: {A: 1.0, B: true, C: x}\n");
    show::<File>("version: 1\ndefaults: &d\n  image: a\ntasks:\n  a:\n    <<: *d\n    steps: [x]\n");
    show::<File>("version: 1\ntasks:\n  a: &d\n    image: a\n    steps: [x]\n  b: *d\n");
    show::<File>("version: 1\ntasks:\n  a: &d\n    image: a\n    steps: [x]\n  b:\n    <<: *d\n    imagx: 1\n");
}

#[derive(Debug)]
struct OMap<V>(Vec<(Spanned<String>, V)>);
impl<'de, V: Deserialize<'de>> Deserialize<'de> for OMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Vis<V> {
            type Value = OMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { f.write_str("a mapping") }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<OMap<V>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry()? { out.push((k, v)); }
                Ok(OMap(out))
            }
        }
        d.deserialize_map(Vis(std::marker::PhantomData))
    }
}
