//! Clients that connect and then say nothing, or say it very slowly, must not keep anyone else
//! out: on the TLS port (a handshake that never finishes) and on the plain port (a CONNECT that
//! never finishes). Each test opens the hostile sockets first, then measures how long a real
//! client — built as every bonker program builds its own — takes to get its CONNACK.

mod support;

use std::time::{Duration, Instant};

use support::{BrokerProcess, TestCa, client, connack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a desk on a loaded machine may wait for its CONNACK while the sockets below are open.
const CONNACK_WITHIN: Duration = Duration::from_secs(2);

/// The first bytes of a TLS ClientHello record (handshake, TLS 1.0 record version, a length).
const CLIENT_HELLO_START: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];

/// The first bytes of an MQTT 3.1.1 CONNECT (fixed header, remaining length 200, protocol name).
const CONNECT_START: &[u8] = &[0x10, 0xc8, 0x01, 0x00, 0x04, b'M', b'Q'];

async fn open(addr: std::net::SocketAddr, count: usize, first_bytes: &[u8]) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        socket.write_all(first_bytes).await.expect("write");
        sockets.push(socket);
    }
    sockets
}

/// Reads until the broker closes `socket` (end of stream or reset), returning when that was.
async fn closed_by_broker(socket: &mut TcpStream, timeout: Duration) -> Option<Instant> {
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(timeout, async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_hundred_idle_sockets_do_not_stop_a_tls_client() {
    let ca = TestCa::new();
    let broker = BrokerProcess::start(
        &format!("listen = \"127.0.0.1:0\"\n{}", ca.tls_section("")),
        2,
    );
    let tls = broker.addr("V4Tls");
    // Fifty send nothing at all, fifty the first bytes of a ClientHello and then nothing.
    let mut hostile = open(tls, 50, &[]).await;
    hostile.extend(open(tls, 50, CLIENT_HELLO_START).await);

    let url = format!("mqtts://localhost:{}", tls.port());
    let (_client, mut event_loop) = client(&url, "desk-behind-idle-sockets", Some(&ca.ca_file()));
    let took = connack(&mut event_loop, CONNACK_WITHIN).await.unwrap_or_else(|error| {
        panic!(
            "with 100 idle sockets open, a TLS client got no CONNACK: {error}\nbroker output:\n{}",
            broker.output()
        )
    });
    println!("CONNACK over TLS with 100 idle sockets open: {took:?}");
    drop(hostile);
}

#[tokio::test]
async fn idle_and_slow_sockets_do_not_stop_a_plain_client() {
    let broker = BrokerProcess::start("listen = \"127.0.0.1:0\"\n", 1);
    let plain = broker.addr("V4");
    let mut hostile = open(plain, 100, &[]).await;
    let mut slow = open(plain, 100, CONNECT_START).await;
    // The slow ones keep sending, one byte each, while the real client connects.
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            for socket in &mut slow {
                let _ = socket.write_all(b"T").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });

    let url = format!("mqtt://127.0.0.1:{}", plain.port());
    let (_client, mut event_loop) = client(&url, "desk-behind-slow-sockets", None);
    let took = connack(&mut event_loop, CONNACK_WITHIN)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "with 100 idle and 100 slow sockets open, a client got no CONNACK: {error}\n\
             broker output:\n{}",
                broker.output()
            )
        });
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the slow sockets were still sending"
    );
    println!("CONNACK on the plain port with 100 idle and 100 slow sockets open: {took:?}");
    hostile.clear();
    trickle.abort();
}

/// Sends `bytes` one at a time, 100 ms apart, while waiting for the broker to close `socket`;
/// returns when it did (or `None` if it had not after `timeout`).
async fn dribble_until_closed(
    socket: TcpStream,
    bytes: &[u8],
    timeout: Duration,
) -> Option<Instant> {
    let (mut read, mut write) = socket.into_split();
    let bytes = bytes.to_vec();
    let dribble = tokio::spawn(async move {
        for byte in bytes {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(timeout, async {
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok();
    dribble.abort();
    closed
}

#[tokio::test]
async fn a_tls_handshake_that_does_not_finish_in_time_is_closed() {
    let ca = TestCa::new();
    let broker = BrokerProcess::start(
        &format!(
            "listen = \"127.0.0.1:0\"\n{}",
            ca.tls_section("handshake_timeout_ms = 500")
        ),
        2,
    );
    let tls = broker.addr("V4Tls");
    let started = Instant::now();
    let mut idle = TcpStream::connect(tls).await.expect("connect");
    let slow = TcpStream::connect(tls).await.expect("connect");
    let mut hello = CLIENT_HELLO_START.to_vec();
    hello.extend([0u8; 100]);
    let (idle_closed, slow_closed) = tokio::join!(
        closed_by_broker(&mut idle, Duration::from_secs(10)),
        dribble_until_closed(slow, &hello, Duration::from_secs(10)),
    );
    for (what, closed) in [
        ("an idle socket", idle_closed),
        ("a slow ClientHello", slow_closed),
    ] {
        let after = closed.unwrap_or_else(|| panic!("{what} was not closed")) - started;
        assert!(
            after >= Duration::from_millis(400) && after < Duration::from_secs(5),
            "{what} was closed after {after:?}; the handshake deadline is 500 ms"
        );
        println!("{what} on the TLS port was closed after {after:?}");
    }
}

#[tokio::test]
async fn a_connect_that_does_not_finish_in_time_is_closed() {
    let broker = BrokerProcess::start("listen = \"127.0.0.1:0\"\nconnect_timeout_ms = 500\n", 1);
    let plain = broker.addr("V4");
    let started = Instant::now();
    let mut idle = TcpStream::connect(plain).await.expect("connect");
    let slow = TcpStream::connect(plain).await.expect("connect");
    let mut connect = CONNECT_START.to_vec();
    connect.extend([b'x'; 100]);
    let (idle_closed, slow_closed) = tokio::join!(
        closed_by_broker(&mut idle, Duration::from_secs(10)),
        dribble_until_closed(slow, &connect, Duration::from_secs(10)),
    );
    for (what, closed) in [
        ("an idle socket", idle_closed),
        ("a slow CONNECT", slow_closed),
    ] {
        let after = closed.unwrap_or_else(|| panic!("{what} was not closed")) - started;
        assert!(
            after >= Duration::from_millis(400) && after < Duration::from_secs(5),
            "{what} was closed after {after:?}; the CONNECT deadline is 500 ms"
        );
        println!("{what} on the plain port was closed after {after:?}");
    }
}

#[tokio::test]
async fn past_max_connecting_new_sockets_are_closed_at_once_and_served_again_later() {
    let ca = TestCa::new();
    let broker = BrokerProcess::start(
        &format!(
            "listen = \"127.0.0.1:0\"\nmax_connecting = 10\n{}",
            ca.tls_section("")
        ),
        2,
    );
    let tls = broker.addr("V4Tls");
    let idle = open(tls, 10, &[]).await;
    let mut eleventh = TcpStream::connect(tls).await.expect("connect");
    let closed = closed_by_broker(&mut eleventh, Duration::from_secs(2)).await;
    assert!(
        closed.is_some(),
        "the eleventh pending connection must be closed at once"
    );
    // The plain listener counts its own connections.
    let plain = broker.addr("V4");
    let (_client, mut event_loop) = client(
        &format!("mqtt://127.0.0.1:{}", plain.port()),
        "plain-desk",
        None,
    );
    connack(&mut event_loop, CONNACK_WITHIN)
        .await
        .expect("the plain listener is not affected");

    drop(idle);
    // Once the idle sockets are gone (the broker notices each close), a TLS desk gets in.
    let url = format!("mqtts://localhost:{}", tls.port());
    let started = Instant::now();
    loop {
        let (_client, mut event_loop) = client(&url, "tls-desk", Some(&ca.ca_file()));
        match connack(&mut event_loop, CONNACK_WITHIN).await {
            Ok(_) => break,
            Err(error) if started.elapsed() < support::DEADLINE => {
                assert!(
                    !error.contains("no CONNACK within"),
                    "refusals are immediate: {error}"
                );
            }
            Err(error) => panic!("no TLS client got in after the idle sockets closed: {error}"),
        }
    }
}
