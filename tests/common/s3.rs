//! A real S3 server for the tests: `s3s-fs` (installed by `make test`), which checks SigV4
//! signatures, enforces the 5 MiB part minimum and honours conditional writes.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "berth-test";
pub const SECRET_KEY: &str = "berth-test-secret";

/// The tests' storage backend: `BERTH_TEST_STORAGE=s3` runs the suite on S3.
pub fn selected() -> bool {
    match std::env::var("BERTH_TEST_STORAGE").as_deref() {
        Ok("s3") => true,
        Ok("") | Ok("default") | Err(_) => false,
        Ok(other) => panic!("BERTH_TEST_STORAGE={other:?}: expected s3 or nothing"),
    }
}

/// One `s3s-fs` process serving a directory, until dropped.
pub struct S3Server {
    pub port: u16,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")));
    for dir in candidates {
        let path = dir.join("s3s-fs");
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "s3s-fs not found: `make test` installs it (cargo install s3s-fs --version 0.14.1 \
         --features binary --locked)"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl S3Server {
    /// A new server on a fresh directory.
    pub fn start() -> S3Server {
        let temp = tempfile::tempdir().unwrap();
        let mut server = S3Server {
            port: free_port(),
            dir: temp.path().to_path_buf(),
            _temp: Some(temp),
            child: None,
        };
        server.resume();
        server
    }

    /// The server shared by every test of this test binary.
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(S3Server::start)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a fresh bucket and answers its name.
    pub fn bucket(&self) -> String {
        let name = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        std::fs::create_dir_all(self.dir.join(&name)).unwrap();
        name
    }

    /// The `REGISTRY_…` variables that put berth on `bucket`.
    pub fn env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("REGISTRY_STORAGE", "s3".to_string()),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", ACCESS_KEY.to_string()),
            ("REGISTRY_STORAGE_S3_SECRETKEY", SECRET_KEY.to_string()),
            ("REGISTRY_STORAGE_S3_REGION", "us-east-1".to_string()),
            ("REGISTRY_STORAGE_S3_REGIONENDPOINT", self.endpoint()),
            ("REGISTRY_STORAGE_S3_BUCKET", bucket.to_string()),
            ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true".to_string()),
            ("REGISTRY_STORAGE_S3_SECURE", "false".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Stops the server (its data stays), as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new(binary());
        cmd.args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(spawn_tied_to_this_process(cmd));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Spawns `cmd` so that it dies with the test process, even if never dropped (the shared
/// server lives in a static): the kernel kills it when the thread that forked it ends, so it is
/// forked from a thread that lives as long as the process.
fn spawn_tied_to_this_process(mut cmd: Command) -> Child {
    use std::os::unix::process::CommandExt;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl is async-signal-safe; it only sets the child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        tx.send(cmd.spawn()).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap().expect("s3s-fs starts")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
