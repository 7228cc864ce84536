//! `kiln agents` and `kiln agent-token create`.

use chrono::Utc;
use clap::Subcommand;

use super::output::{ago, dash, emit, print_json, table};
use super::{ClientArgs, Output, connect};
use crate::run_command::EXIT_SUCCESS;

#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum AgentTokenCommand {
    /// Make a token an agent connects with; it is shown this once.
    Create {
        /// The agent's name: the only one the token works under.
        name: String,
        /// The labels the agent may offer (comma-separated); any when left out.
        #[arg(long, value_delimiter = ',')]
        labels: Option<Vec<String>>,
        /// The most tasks the agent may take at once (1 to 64).
        #[arg(long)]
        capacity: Option<i64>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(super) async fn agents(args: &ClientArgs) -> anyhow::Result<i32> {
    let agents = connect(args)?.list_agents().await?;
    if args.output == Output::Json {
        return print_json(&agents);
    }
    if agents.is_empty() {
        emit("no agents: start one with `KILN_AGENT_TOKEN=… kiln agent --server …`\n")?;
        return Ok(EXIT_SUCCESS);
    }
    let now = Utc::now();
    let rows = agents
        .iter()
        .map(|agent| {
            vec![
                agent.name.clone(),
                agent.state.clone(),
                dash(Some(&agent.labels.join(","))),
                dash(Some(&agent.running_tasks.join(", "))),
                agent
                    .last_heartbeat
                    .map_or_else(|| "never".into(), |at| ago(at, now)),
            ]
        })
        .collect();
    emit(&table(
        &["NAME", "STATE", "LABELS", "RUNNING", "LAST HEARTBEAT"],
        rows,
    ))?;
    Ok(EXIT_SUCCESS)
}

pub(super) async fn agent_token(command: AgentTokenCommand) -> anyhow::Result<i32> {
    match command {
        AgentTokenCommand::Create {
            name,
            labels,
            capacity,
            client,
        } => {
            let body = kiln_api::AgentTokenBody {
                name,
                labels,
                max_capacity: capacity,
            };
            agent_token_create(&client, &body).await
        }
    }
}

async fn agent_token_create(
    args: &ClientArgs,
    body: &kiln_api::AgentTokenBody,
) -> anyhow::Result<i32> {
    let client = connect(args)?;
    let created = client.create_agent_token(body).await?;
    if args.output == Output::Json {
        return print_json(&created);
    }
    let host = client.server_host();
    emit(&format!(
        "agent token `{}` (shown once, keep it): {}\n\
         start an agent with it, from the environment (or --token-file), never the command line \
         (the server's gRPC address: its --grpc-listen, port 9090 by default):\n  \
         KILN_AGENT_TOKEN={} kiln agent --server http://{host}:9090 --name {}\n",
        created.name, created.token, created.token, created.name
    ))?;
    Ok(EXIT_SUCCESS)
}
