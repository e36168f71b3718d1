//! `kubekms-floor`: the least a server can do to answer the benchmark's Encrypt, so the engine
//! has a floor to be measured against on the same machine in the same run: hyper, serde_json
//! and AES-256-GCM (aws-lc-rs), no authentication, no audit log, no key lookup.
//!
//!     kubekms-floor --listen 127.0.0.1:0
//!
//! It prints `listening on http://ADDR` once it accepts connections, like the engine does, and
//! answers every `POST /` with the Encrypt response shape. Nothing here ships.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptIn {
    key_id: String,
    plaintext: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptOut<'a> {
    ciphertext_blob: String,
    key_id: &'a str,
    encryption_algorithm: &'static str,
}

struct Floor {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Floor {
    fn encrypt(&self, body: &[u8]) -> Result<Vec<u8>> {
        let req: EncryptIn = serde_json::from_slice(body)?;
        let mut data = B64.decode(req.plaintext.as_bytes())?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("random"))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(req.key_id.as_bytes()),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("seal"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&data);
        Ok(serde_json::to_vec(&EncryptOut {
            ciphertext_blob: B64.encode(&blob),
            key_id: &req.key_id,
            encryption_algorithm: "SYMMETRIC_DEFAULT",
        })?)
    }

    async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>> {
        let body = req.into_body().collect().await?.to_bytes();
        let (status, out) = match self.encrypt(&body) {
            Ok(out) => (200, out),
            Err(_) => (
                400,
                br#"{"__type":"ValidationException","message":"bad"}"#.to_vec(),
            ),
        };
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from(out)))?)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut raw = [0u8; 32];
    let rng = SystemRandom::new();
    rng.fill(&mut raw).map_err(|_| anyhow::anyhow!("random"))?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| anyhow::anyhow!("AES key"))?,
    );
    let floor = Arc::new(Floor { key, rng });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let floor = floor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| floor.clone().serve(req));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
