//! The `dynamcp` binary: parse the command line, set up logging, run the subcommand.

use tracing_subscriber::EnvFilter;

use dynamcp::config::{CatalogCommand, Cli, Command, LogFormat, VaultCommand};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // An optional .env file; real environment variables win over it.
    let _ = dotenvy::dotenv();
    dynamcp::private_files();
    let cli = Cli::parse_args();
    match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format, "info,sqlx=warn");
            dynamcp::run(*args, dynamcp::shutdown_signal()).await
        }
        Command::Mcp(args) => {
            init_tracing(args.serve.log_format, "warn");
            dynamcp::mcp::run(*args).await
        }
        Command::Catalog(CatalogCommand::Import(args)) => {
            init_tracing(LogFormat::Text, "warn");
            dynamcp::cli::import(args).await
        }
        Command::Catalog(CatalogCommand::Verify(args)) => {
            init_tracing(LogFormat::Text, "warn");
            dynamcp::cli::verify(*args).await
        }
        Command::Catalog(CatalogCommand::PackEmbeddings(args)) => {
            init_tracing(LogFormat::Text, "warn");
            dynamcp::cli::pack_embeddings(args).await
        }
        Command::Doctor(args) => {
            init_tracing(LogFormat::Text, "error");
            dynamcp::cli::doctor(args).await
        }
        Command::Search(args) => {
            init_tracing(LogFormat::Text, "warn");
            dynamcp::cli::search(args).await
        }
        Command::Bench(args) => {
            init_tracing(LogFormat::Text, "warn");
            dynamcp::bench::run(args).await
        }
        Command::BenchLoad(args) => {
            init_tracing(LogFormat::Text, "warn");
            dynamcp::bench::load::run(args).await
        }
        Command::BenchRuntime(args) => {
            init_tracing(LogFormat::Text, "warn");
            dynamcp::bench::runtime::run(args).await
        }
        Command::Eval(args) => {
            init_tracing(LogFormat::Text, "warn");
            dynamcp::cli::eval(args).await
        }
        Command::Keys(command) => {
            init_tracing(LogFormat::Text, "warn");
            dynamcp::cli::keys(command).await
        }
        Command::Vault(command) => {
            init_tracing(LogFormat::Text, "warn");
            match command {
                VaultCommand::Rotate(args) => dynamcp::cli::vault_rotate(args).await,
                VaultCommand::Rewrap(args) => dynamcp::cli::vault_rewrap(args).await,
                VaultCommand::Status(args) => dynamcp::cli::vault_status(args).await,
                VaultCommand::Prune(args) => dynamcp::cli::vault_prune(args).await,
            }
        }
    }
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_env("DYNAMCP_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only for a person at a terminal: a log file or a journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
