//! The JSON schema of the pipeline file, for editors and other tools.

use schemars::generate::SchemaSettings;

use crate::file::PipelineFile;

/// The JSON schema (draft 2020-12) of `.kiln.yml`, generated from the file
/// model, with the doc comments as descriptions. The committed copy lives in
/// `docs/kiln.schema.json`.
///
/// The schema describes the shape of the file; rules that need the whole file
/// (a `needs` naming a real task, no cycles, matrix axes that exist) are only
/// checked by [`parse`](crate::parse).
pub fn json_schema() -> serde_json::Value {
    let schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<PipelineFile>();
    let mut value = schema.to_value();
    unwrap_descriptions(&mut value);
    if let Some(object) = value.as_object_mut() {
        object.insert("title".into(), "Kiln pipeline (.kiln.yml)".into());
    }
    value
}

/// Joins the lines of descriptions taken from doc comments, which are
/// wrapped for the source, so that editors can wrap them for their hover
/// windows. Blank lines (paragraphs) are kept.
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                match child {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| paragraph.replace('\n', " "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(child),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::json_schema;

    /// The committed schema must match the code. Set `KILN_BLESS=1` to
    /// rewrite it after changing the file model.
    #[test]
    fn committed_schema_is_up_to_date() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/kiln.schema.json");
        let mut expected =
            serde_json::to_string_pretty(&json_schema()).expect("a JSON value serializes");
        expected.push('\n');
        if std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &expected).expect("write docs/kiln.schema.json");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == expected,
            "docs/kiln.schema.json is out of date with the file model in crates/kiln-pipeline/src/file.rs; \
             regenerate it with `KILN_BLESS=1 cargo test -p kiln-pipeline`"
        );
    }

    #[test]
    fn schema_names_the_format() {
        let schema = json_schema();
        assert_eq!(schema["title"], "Kiln pipeline (.kiln.yml)");
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["required"], serde_json::json!(["version", "tasks"]));
        let tasks = &schema["properties"]["tasks"];
        assert_eq!(
            tasks["additionalProperties"]["allOf"][1]["required"],
            serde_json::json!(["steps"])
        );
        assert!(tasks["patternProperties"]["^\\."]["$ref"].is_string());
    }
}
