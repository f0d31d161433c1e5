//! Throwaway servers for fault tests: a private Postgres cluster (initdb on
//! a free port), a private redis-server, and `tollgate serve` processes. Each
//! can be stopped, killed and started again without touching the machine's
//! shared services.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-{tag}-{}",
        tollgate::keys::random_base62(10)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "{what} did not come up in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Runs a Postgres tool as the `postgres` user when we are root (initdb
/// refuses root).
fn pg_command(tool: &str) -> Command {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|mut entries| entries.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("bin").join(tool))
        .unwrap_or_else(|| PathBuf::from(tool));
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if is_root {
        let mut command = Command::new("runuser");
        command.arg("-u").arg("postgres").arg("--").arg(bin);
        command
    } else {
        Command::new(bin)
    }
}

pub struct PgCluster {
    dir: PathBuf,
    pub port: u16,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let dir = temp_dir("pg");
        let status = Command::new("chown").arg("postgres").arg(&dir).status();
        assert!(status.map(|s| s.success()).unwrap_or(true));
        let data = dir.join("data");
        let output = pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .arg("--auth=trust")
            .arg("-U")
            .arg("postgres")
            .arg("--no-sync")
            .stdout(Stdio::null())
            .output()
            .expect("initdb");
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = PgCluster {
            dir,
            port: free_port(),
        };
        cluster.resume();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (again) on the same port and data.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let output = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-w")
            .arg("start")
            .output()
            .expect("pg_ctl start");
        assert!(
            output.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        wait_for("postgres", Duration::from_secs(20), || port_open(self.port));
    }

    /// Stops it (fast: open connections are cut).
    pub fn stop(&self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-m")
            .arg("fast")
            .arg("-w")
            .arg("stop")
            .output();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
        };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again, empty: it keeps nothing on disk).
    pub fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        wait_for("redis", Duration::from_secs(10), || port_open(self.port));
    }

    /// Kills it; everything in it is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis to kill and bring back empty: one server, or a cluster.
pub trait Redis: Send + Sync {
    /// The gateway's `storage.redis_url`.
    fn url(&self) -> String;
    /// Kills it; everything in it is lost.
    fn kill(&mut self);
    /// Starts it again, empty.
    fn resume(&mut self);
    /// The port of its (first) server.
    fn port(&self) -> u16;
}

impl Redis for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }
    fn kill(&mut self) {
        RedisServer::kill(self)
    }
    fn resume(&mut self) {
        RedisServer::resume(self)
    }
    fn port(&self) -> u16 {
        self.port
    }
}

/// A local Redis Cluster of three masters (no replicas), each with its
/// own port and cluster bus port; its node files survive a kill, so the
/// masters come back with their slots (and no data).
pub struct RedisCluster {
    nodes: Vec<(u16, u16, Option<Child>)>,
    dir: Scratch,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = Scratch::new("redis-cluster");
        std::fs::create_dir_all(&dir.0).unwrap();
        let mut cluster = RedisCluster {
            nodes: (0..3).map(|_| (free_port(), free_port(), None)).collect(),
            dir,
        };
        cluster.spawn_all();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for (port, _, _) in &cluster.nodes {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok();
        cluster
    }

    fn spawn_all(&mut self) {
        for (port, bus, child) in &mut self.nodes {
            let spawned = Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "1000",
                    "--dir",
                    &self.dir.0.display().to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server");
            *child = Some(spawned);
        }
        for (port, _, _) in &self.nodes {
            let port = *port;
            wait_for("redis cluster node", Duration::from_secs(10), || {
                port_open(port)
            });
        }
    }

    /// Waits until every node says the cluster is up.
    fn wait_ok(&self) {
        for (port, _, _) in &self.nodes {
            let port = *port;
            wait_for("redis cluster state ok", Duration::from_secs(30), || {
                Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
        }
    }
}

impl Redis for RedisCluster {
    fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|(port, _, _)| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    fn kill(&mut self) {
        for (_, _, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn resume(&mut self) {
        self.spawn_all();
        self.wait_ok();
    }

    fn port(&self) -> u16 {
        self.nodes[0].0
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        Redis::kill(self);
    }
}

/// A `tollgate serve` process.
pub struct GatewayProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl GatewayProcess {
    /// Starts with `config` (TOML without `[server] listen`, which is added).
    pub fn start(config: &str, dir: &Path) -> GatewayProcess {
        let port = free_port();
        let path = dir.join(format!("gateway-{port}.toml"));
        std::fs::write(
            &path,
            format!("[server]\nlisten = \"127.0.0.1:{port}\"\n{config}"),
        )
        .unwrap();
        let mut process = GatewayProcess {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            config: path,
            log: dir.join(format!("gateway-{port}.log")),
        };
        process.resume();
        process
    }

    pub fn resume(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .env_remove("TOLLGATE_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tollgate serve");
        self.child = Some(child);
        let port = self.addr.port();
        wait_for("gateway", Duration::from_secs(20), || port_open(port));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("gateway running")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the drain.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        Scratch(temp_dir(tag))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP relay in front of a server that can be cut (a network partition:
/// open connections are dropped, new ones are accepted and closed unread)
/// and healed.
pub struct Partition {
    pub port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Partition {
    pub async fn start(target_port: u16) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *watch.borrow() {
                    drop(client);
                    continue;
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Partition { port, cut }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}
