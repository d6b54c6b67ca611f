//! The status page in a real (headless Chromium) browser: it renders the cluster,
//! updates itself without a reload as the cluster changes, and browses the
//! namespace down to a file's chunks. Leaves a screenshot in the target dir.

use std::net::SocketAddr;
use std::time::Duration;

use dfs_client::PutOptions;
use dfs_testkit::browser::Browser;
use dfs_testkit::{bounded, cluster_with, data, CHUNK};

const UPDATE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_cluster_and_follows_it_live() {
    bounded(async {
        let (_dir, cluster) = cluster_with(|o| {
            o.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        })
        .await;
        let http = cluster.master_http_addr().expect("http");
        let c = cluster.client();
        c.mkdir("/photos", false).await.expect("mkdir");
        c.put("/photos/<b>cat<i>.jpg", &data(2 * CHUNK + 5, 2)[..], PutOptions::default())
            .await
            .expect("put");

        let browser = Browser::start().await;
        browser.goto(&format!("http://{http}/")).await;
        browser
            .wait_for(
                UPDATE,
                "return document.querySelectorAll('#servers tbody tr').length === 3",
            )
            .await;
        let servers = browser
            .eval("return document.getElementById('servers').innerText")
            .await;
        for addr in cluster.chunkserver_addrs() {
            assert!(
                servers.as_str().unwrap_or("").contains(&addr.to_string()),
                "{addr} not shown: {servers}"
            );
        }

        // Live: a mark set in the page survives (no reload) while a new operation
        // and the new file count appear.
        browser.eval("window.__mark = 42; return true").await;
        c.mkdir("/appeared-later", false).await.expect("mkdir");
        c.put("/appeared-later/x", &b"x"[..], PutOptions::default())
            .await
            .expect("put");
        browser
            .wait_for(
                UPDATE,
                "return document.getElementById('ops').innerText.includes('/appeared-later')",
            )
            .await;
        browser
            .wait_for(
                UPDATE,
                "return document.getElementById('cards').innerText.includes('2\\nfiles')",
            )
            .await;
        assert_eq!(browser.eval("return window.__mark").await, 42);

        // Browse: into /photos, then the file's chunks. The name is shown as text,
        // never as markup.
        browser
            .eval(
                "[...document.querySelectorAll('#crumbs a')][0].click(); return true",
            )
            .await;
        browser
            .wait_for(
                UPDATE,
                "return document.getElementById('listing').innerText.includes('photos/')",
            )
            .await;
        browser
            .eval(
                "[...document.querySelectorAll('#listing a')].find(a => a.textContent === 'photos/').click(); return true",
            )
            .await;
        browser
            .wait_for(
                UPDATE,
                "return document.getElementById('listing').innerText.includes('<b>cat<i>.jpg')",
            )
            .await;
        assert_eq!(
            browser
                .eval("return document.querySelectorAll('#listing b').length")
                .await,
            0,
            "a file name became markup"
        );
        browser
            .eval(
                "[...document.querySelectorAll('#listing a')].find(a => a.textContent.endsWith('.jpg')).click(); return true",
            )
            .await;
        browser
            .wait_for(
                UPDATE,
                "return document.querySelectorAll('#file table tr').length === 4",
            )
            .await;
        let file = browser
            .eval("return document.getElementById('file').innerText")
            .await;
        let file = file.as_str().unwrap_or("");
        let stat = c.stat("/photos/<b>cat<i>.jpg").await.expect("stat");
        for chunk in &stat.chunks {
            assert!(file.contains(&chunk.handle.to_string()), "{file}");
        }

        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
        let shot = browser.screenshot(&shot).await;
        let png = std::fs::read(&shot).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
        browser.close().await;
        cluster.shutdown().await.expect("shutdown");
    })
    .await;
}
