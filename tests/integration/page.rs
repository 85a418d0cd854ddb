//! The daemon's status page in a real browser: headless Chromium (Debian's), driven over the
//! DevTools protocol. Signs in with the one-time link `fleet status --login` prints, sees the quickstart's agents, sends a message
//! in the chat pane and sees the reply arrive over the event stream.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::World;

struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch() -> Browser {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium (Debian's `chromium` package; tests/run-all.sh installs it)");
    let err = child.stderr.take().unwrap();
    let mut port = 0;
    for line in BufReader::new(err).lines().map_while(Result::ok) {
        if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
            port = rest.split('/').next().unwrap().parse().unwrap();
            break;
        }
    }
    assert!(port > 0, "chromium did not say where DevTools listens");
    Browser { child, _profile: profile, port }
}

/// One page, spoken to over CDP.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next: u64,
}

impl Page {
    async fn open(b: &Browser) -> Page {
        let list: Value =
            reqwest::get(format!("http://127.0.0.1:{}/json/list", b.port)).await.unwrap().json().await.unwrap();
        let url = list.as_array().unwrap().iter().find(|t| t["type"] == "page").unwrap()["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Page { ws, next: 0 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.ws
            .send(Message::Text(json!({"id": id, "method": method, "params": params}).to_string().into()))
            .await
            .unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next()).await.unwrap().unwrap().unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    async fn eval(&mut self, js: &str) -> Value {
        let r =
            self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true, "awaitPromise": true})).await;
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluates `js` until it is truthy (at most `within`); its last value.
    async fn until(&mut self, js: &str, within: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.eval(js).await;
            let truthy = !matches!(v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!([]);
            if truthy || t0.elapsed() > within {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.until("document.readyState === 'complete' && location.href !== 'about:blank'", Duration::from_secs(20))
            .await;
    }
}

/// A phase of the daemon's shared fleet (serve.rs): any applied quickstart with its daemon.
pub fn the_status_page_logs_in_lists_the_agents_and_chats(w: &World) {
    let kdl = w.read("fleet.kdl");
    let at = kdl.find("listen \"127.0.0.1:").unwrap() + "listen \"127.0.0.1:".len();
    let port: u16 = kdl[at..].split('"').next().unwrap().parse().unwrap();
    let token = std::fs::read_to_string(w.data_dir("quickstart").join("serve/token")).unwrap().trim().to_string();
    let status = w.fleet(&["status"]).ok();
    assert!(!status.stdout.contains(&token), "fleet status prints no secret unless asked: {}", status.stdout);
    assert!(status.stdout.contains(&format!("http://127.0.0.1:{port}/login")), "{}", status.stdout);
    // Asked for: a one-time link, the code in the fragment (never sent in a request line).
    let asked = w.fleet(&["status", "--login"]).ok();
    let at = asked.stdout.find(&format!("http://127.0.0.1:{port}/login#code=")).expect("a one-time sign-in link");
    let login = asked.stdout[at..].split_whitespace().next().unwrap().to_string();
    assert!(!asked.stdout.contains(&token), "the link is not the admin token");

    let b = launch();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut p = Page::open(&b).await;
        p.call("Page.enable", json!({})).await;
        p.call("Emulation.setDeviceMetricsOverride", json!({"width": 1280, "height": 820, "deviceScaleFactor": 1, "mobile": false})).await;

        // Without the token: the sign-in page, nothing of the fleet.
        p.goto(&format!("http://127.0.0.1:{port}/")).await;
        let text = p.eval("document.body.innerText").await;
        assert!(text.as_str().unwrap().contains("Sign in"), "{text}");
        assert_eq!(p.eval("document.querySelectorAll('.agent').length").await, 0);

        // The one-time link: the page posts the code, gets a session cookie (HttpOnly: invisible to
        // scripts), then goes to `/`.
        p.goto(&login).await;
        let at = p.until("location.pathname === '/' && location.search === '' && document.querySelectorAll('.agent').length", Duration::from_secs(20)).await;
        assert_eq!(at, 2, "both quickstart agents are listed");
        assert_eq!(p.eval("document.cookie").await, "", "the session cookie is HttpOnly");
        let agents = p.eval("[...document.querySelectorAll('.agent')].map(b => b.dataset.agent)").await;
        assert_eq!(agents, json!(["alice", "bob"]));
        let page = p.eval("document.body.innerText").await.as_str().unwrap().to_string();
        assert!(page.contains("healthy") && page.contains("2026.9.6") && page.contains("apply"), "{page}");

        // Chat: pick alice, send, see the reply arrive (over SSE).
        p.eval("document.querySelector('.agent[data-agent=alice]').click()").await;
        p.until("!document.getElementById('text').disabled", Duration::from_secs(10)).await;
        // The pane shows the thread's earlier turns too (the shared fleet's other phases talked to
        // alice): the reply looked for is an agent message after this user message.
        p.eval("document.getElementById('text').value = 'hello from the browser'; document.getElementById('send').requestSubmit(); true").await;
        let reply = p
            .until(
                "(() => { const m = [...document.querySelectorAll('#log .msg')]; \
                  const at = m.map(e => e.classList.contains('user') && e.textContent.includes('hello from the browser')).lastIndexOf(true); \
                  return at < 0 ? '' : (m.slice(at + 1).filter(e => e.classList.contains('agent')).map(e => e.textContent).find(t => t.includes('Hello from the demo model.')) || ''); })()",
                Duration::from_secs(90),
            )
            .await;
        assert!(reply.as_str().unwrap_or_default().contains("Hello from the demo model."), "no reply in the pane: {reply}");
        let mine = p.eval("[...document.querySelectorAll('#log .msg.user')].map(e => e.textContent).join('|')").await;
        assert!(mine.as_str().unwrap().contains("hello from the browser"), "{mine}");

        let shot = p.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64_decode(shot["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let out = std::env::var_os("FLEET_SCREENSHOT").map(std::path::PathBuf::from).unwrap_or_else(|| w.root().join("status.png"));
        std::fs::write(&out, png).unwrap();

        // Sign out: back at the sign-in page, and the session is over at the daemon too.
        p.eval("document.getElementById('signout').click(); true").await;
        p.until("location.pathname === '/login'", Duration::from_secs(20)).await;
        p.goto(&format!("http://127.0.0.1:{port}/")).await;
        let text = p.eval("document.body.innerText").await;
        assert!(text.as_str().unwrap().contains("Sign in"), "signed out: {text}");
        // The spent link signs in no more.
        p.goto(&login).await;
        let why = p.until("document.getElementById('why') && document.getElementById('why').textContent.includes('code was used')", Duration::from_secs(20)).await;
        assert_eq!(why, true);
    });
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
