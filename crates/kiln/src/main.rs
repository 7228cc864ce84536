use clap::Parser;
use kiln::cli::{Cli, Command};
use kiln::run_command;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("KILN_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Before any thread starts: a server takes its secrets out of the
    // environment (see `take_start_secrets`).
    let secrets = match &cli.command {
        Command::Up(_) | Command::Server(_) => kiln::server_command::take_start_secrets(),
        Command::Agent(args) => {
            kiln::agent_command::hide_token(args);
            Default::default()
        }
        _ => Default::default(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(run_command::EXIT_INVALID);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run_command::run(args).await,
            Command::Validate(args) => run_command::validate(&args),
            Command::Schema => run_command::schema(),
            Command::Up(args) => kiln::server_command::up(args, secrets).await,
            Command::Server(args) => kiln::server_command::server(args, secrets).await,
            Command::Agent(args) => kiln::agent_command::agent(args).await,
            Command::Client(command) => kiln::client::run(command).await,
        }
    });
    // Tasks still winding down (e.g. a dropped clean-up) get a moment, not forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(run_command::EXIT_INVALID);
        }
    }
}
