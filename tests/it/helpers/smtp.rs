//! A real SMTP server for the email tests: aiosmtpd (from the venv the
//! README's test command makes) on loopback, run by `tests/sdk/smtp_sink.py`,
//! which writes every message it takes as JSON — envelope, headers as
//! received, text and HTML parts, attachments — parsed by Python's own
//! email package.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::servers::Scratch;

fn python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python")
}

pub struct SmtpSink {
    pub port: u16,
    dir: Scratch,
    args: Vec<String>,
    child: Option<Child>,
}

fn spawn(dir: &Path, port: u16, args: &[String]) -> (Child, u16) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/smtp_sink.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(dir)
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "{} cannot run ({error}): run the README's test command (tests/run.sh), which installs aiosmtpd into tests/.venv",
                python().display()
            )
        });
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the SMTP sink said {line:?} (is aiosmtpd in tests/.venv?)"));
    (child, port)
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::start_with(&[])
    }

    /// With the sink's options (`--tls implicit|starttls --cert --key`,
    /// `--auth user:password`).
    pub fn start_with(args: &[&str]) -> SmtpSink {
        let dir = Scratch::new("smtp");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, port) = spawn(&dir.0, 0, &args);
        SmtpSink {
            port,
            dir,
            args,
            child: Some(child),
        }
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops the server (the port stops answering).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let (child, port) = spawn(&self.dir.0, self.port, &self.args);
        assert_eq!(port, self.port);
        self.child = Some(child);
    }

    /// Every message taken so far, in order.
    pub fn mails(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir.0)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits until at least `n` messages arrived; they, in order.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                start.elapsed() < timeout,
                "{} of {n} mails within {timeout:?}: {mails:#?}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl SmtpSink {
    /// Waits until at least `n` of the messages taken pass `keep`; those.
    pub async fn wait_for_kind(
        &self,
        n: usize,
        timeout: Duration,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let mails: Vec<Value> = self.mails().into_iter().filter(|m| keep(m)).collect();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                start.elapsed() < timeout,
                "{} of {n} mails within {timeout:?}: {:#?}",
                mails.len(),
                self.mails()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An invitation's mail (sent or not, depending on whether its invitation
/// was accepted before the worker came to it).
pub fn is_invitation(mail: &Value) -> bool {
    mail["subject"]
        .as_str()
        .is_some_and(|s| s.contains(" invited you to join "))
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A header's values in a received mail.
pub fn header<'a>(mail: &'a Value, name: &str) -> Vec<&'a str> {
    mail["headers"]
        .as_array()
        .map(|headers| {
            headers
                .iter()
                .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                .filter_map(|h| h[1].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// The `[email]` section for a sink, links based on `public_url`.
pub fn email_config(sink: &SmtpSink, public_url: &str, more: &str) -> String {
    format!(
        "\n[email]\nsmtp_url = \"{}\"\nfrom = \"Tollgate <noreply@tollgate.test>\"\npublic_url = \"{public_url}\"\n{more}\n",
        sink.url()
    )
}

/// A test CA and a certificate it signed for 127.0.0.1 and localhost,
/// made with openssl in `dir`: (CA PEM, certificate PEM, key PEM).
pub fn test_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Tollgate test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "smtp.key",
        "-out",
        "smtp.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("smtp.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "smtp.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "smtp.pem",
        "-days",
        "2",
        "-extfile",
        "smtp.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("smtp.pem"),
        dir.join("smtp.key"),
    )
}
