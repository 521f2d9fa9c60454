//! Registry benchmark: starts Drydock and CNCF Distribution on loopback, runs the same OCI client
//! against both, and prints absolute figures with Drydock/Distribution ratios.

mod oci;
mod servers;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::oci::{Image, OciClient};
use crate::servers::Registry;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Parser)]
#[command(about = "Benchmark Drydock's registry against CNCF Distribution on loopback")]
struct Args {
    /// Drydock binary [default: `drydock` beside this executable].
    #[arg(long)]
    drydock: Option<PathBuf>,
    /// Drydock's development OIDC issuer [default: `drydock-dev-oidc-issuer` beside this
    /// executable].
    #[arg(long)]
    issuer: Option<PathBuf>,
    /// CNCF Distribution binary.
    #[arg(long, default_value = "/usr/local/bin/registry")]
    distribution: PathBuf,
    /// Folder that keeps the generated large-image layers between runs.
    #[arg(long, default_value = "/tmp/drydock-bench-cache")]
    cache_dir: PathBuf,
    /// Folder under which each run makes a temporary folder for both registries' data.
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
    /// Size of the large image in MiB, split evenly across its layers.
    #[arg(long, default_value_t = 1024)]
    big_mib: usize,
    /// Number of layers of the large image.
    #[arg(long, default_value_t = 8)]
    big_layers: usize,
    /// Blob uploads or downloads in flight for the large image.
    #[arg(long, default_value_t = 4)]
    big_concurrency: usize,
    /// Number of small images.
    #[arg(long, default_value_t = 500)]
    small_images: usize,
    /// Layer size of each small image in bytes.
    #[arg(long, default_value_t = 1024)]
    small_layer_bytes: usize,
    /// Small images pushed or pulled at a time.
    #[arg(long, default_value_t = 8)]
    small_concurrency: usize,
    /// Concurrent clients of the manifest load test.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Duration of the manifest load test per registry, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
}

/// Figures measured on one registry.
#[derive(Default)]
struct Figures {
    big_push_mib_s: f64,
    big_pull_mib_s: f64,
    small_push_per_s: f64,
    small_pull_per_s: f64,
    manifest_per_s: f64,
    manifest_other: u64,
    peak_rss_mib: f64,
    /// Registry CPU seconds used in each phase, in the order of [`PHASES`].
    cpu_seconds: [f64; 5],
}

const PHASES: [&str; 5] = [
    "large push",
    "large pull",
    "small push",
    "small pull",
    "manifest GET",
];

/// Runs `phase` against `registry` and adds the registry's CPU time to `cpu`.
async fn measure<T>(
    registry: &Registry,
    cpu: &mut f64,
    phase: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let before = registry.process.cpu_seconds()?;
    let value = phase
        .await
        .with_context(|| format!("benchmark against {} failed", registry.name))?;
    *cpu += registry.process.cpu_seconds()? - before;
    Ok(value)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let drydock_bin = match args.drydock.clone() {
        Some(path) => path,
        None => servers::sibling_binary("drydock")?,
    };
    let issuer_bin = match args.issuer.clone() {
        Some(path) => path,
        None => servers::sibling_binary("drydock-dev-oidc-issuer")?,
    };

    eprintln!("loading or generating {} MiB of layers", args.big_mib);
    let layer_bytes = args.big_mib * 1024 * 1024 / args.big_layers;
    let layers = workloads::load_big_layers(&args.cache_dir, args.big_layers, layer_bytes)?;
    let big = Image::new(layers);
    let small = workloads::small_images(args.small_images, args.small_layer_bytes);

    let dir = tempfile::Builder::new()
        .prefix("drydock-bench-")
        .tempdir_in(&args.work_dir)?;
    let registries = [
        servers::start_drydock(&drydock_bin, &issuer_bin, dir.path()).await?,
        servers::start_distribution(&args.distribution, dir.path()).await?,
    ];
    let clients = registries
        .iter()
        .map(|r| OciClient::new(&r.base_url, r.token.clone()))
        .collect::<Result<Vec<_>>>()?;
    let mut figures: [Figures; 2] = Default::default();
    let big_mib = (big.layer_bytes() + big.config.size()) as f64 / MIB;

    for (i, registry) in registries.iter().enumerate() {
        eprintln!("{}: large image push", registry.name);
        let cpu = &mut figures[i].cpu_seconds[0];
        let elapsed = measure(
            registry,
            cpu,
            workloads::push_big(&clients[i], &big, args.big_concurrency),
        )
        .await?;
        figures[i].big_push_mib_s = big_mib / elapsed.as_secs_f64();
    }
    for (i, registry) in registries.iter().enumerate() {
        eprintln!("{}: large image pull", registry.name);
        let cpu = &mut figures[i].cpu_seconds[1];
        let elapsed = measure(
            registry,
            cpu,
            workloads::pull_big(&clients[i], &big, args.big_concurrency),
        )
        .await?;
        figures[i].big_pull_mib_s = big_mib / elapsed.as_secs_f64();
    }
    let count = small.len() as f64;
    for (i, registry) in registries.iter().enumerate() {
        eprintln!("{}: small image push", registry.name);
        let cpu = &mut figures[i].cpu_seconds[2];
        let elapsed = measure(
            registry,
            cpu,
            workloads::push_small(&clients[i], &small, args.small_concurrency),
        )
        .await?;
        figures[i].small_push_per_s = count / elapsed.as_secs_f64();
    }
    for (i, registry) in registries.iter().enumerate() {
        eprintln!("{}: small image pull", registry.name);
        let cpu = &mut figures[i].cpu_seconds[3];
        let elapsed = measure(
            registry,
            cpu,
            workloads::pull_small(&clients[i], &small, args.small_concurrency),
        )
        .await?;
        figures[i].small_pull_per_s = count / elapsed.as_secs_f64();
    }
    for (i, registry) in registries.iter().enumerate() {
        eprintln!("{}: manifest GET load", registry.name);
        let cpu = &mut figures[i].cpu_seconds[4];
        let rate = measure(
            registry,
            cpu,
            workloads::manifest_rate(
                &clients[i],
                small.len(),
                args.clients,
                Duration::from_secs(args.duration_secs),
            ),
        )
        .await?;
        figures[i].manifest_per_s = rate.per_second();
        figures[i].manifest_other = rate.other;
    }
    for (i, registry) in registries.iter().enumerate() {
        figures[i].peak_rss_mib = registry.process.peak_rss_kib()? as f64 / 1024.0;
    }

    print_tables(&args, &figures);
    Ok(())
}

fn print_tables(args: &Args, figures: &[Figures; 2]) {
    let [drydock, distribution] = figures;
    let rows = [
        (
            format!(
                "Push {} MiB image, {} layers (MiB/s)",
                args.big_mib, args.big_layers
            ),
            drydock.big_push_mib_s,
            distribution.big_push_mib_s,
        ),
        (
            "Pull same image (MiB/s)".to_owned(),
            drydock.big_pull_mib_s,
            distribution.big_pull_mib_s,
        ),
        (
            format!("Push {} small images (images/s)", args.small_images),
            drydock.small_push_per_s,
            distribution.small_push_per_s,
        ),
        (
            format!("Pull {} small images (images/s)", args.small_images),
            drydock.small_pull_per_s,
            distribution.small_pull_per_s,
        ),
        (
            format!("Manifest GET, {} clients (200s/s)", args.clients),
            drydock.manifest_per_s,
            distribution.manifest_per_s,
        ),
        (
            "Peak RSS, VmHWM (MiB; lower is better)".to_owned(),
            drydock.peak_rss_mib,
            distribution.peak_rss_mib,
        ),
    ];
    println!("| Measure | Drydock | Distribution | Drydock/Distribution |");
    println!("|---|---:|---:|---:|");
    for (name, ours, theirs) in rows {
        println!(
            "| {name} | {ours:.1} | {theirs:.1} | {:.2}x |",
            ours / theirs
        );
    }
    println!(
        "\nNon-200 manifest responses: Drydock {}, Distribution {}.\n",
        drydock.manifest_other, distribution.manifest_other
    );
    println!("| Registry CPU seconds in phase | Drydock | Distribution |");
    println!("|---|---:|---:|");
    for (index, phase) in PHASES.iter().enumerate() {
        println!(
            "| {phase} | {:.2} | {:.2} |",
            drydock.cpu_seconds[index], distribution.cpu_seconds[index]
        );
    }
}
