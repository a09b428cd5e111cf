//! Helpers shared by the QEMU test binaries.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A loopback port nothing listens on (for QEMU's forwarded API port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A built board: its config and `out/<board>` (which must hold `disk.img`).
pub fn built_board(board_name: &str) -> (cairnctl::board::Board, PathBuf) {
    let repo = repo();
    let board = cairnctl::board::load(&repo.join("board-configs"), board_name).unwrap();
    let out = repo.join("out").join(board_name);
    assert!(
        out.join("disk.img").is_file(),
        "{}/disk.img is missing: run `make image BOARD={board_name}` (make test does)",
        out.display()
    );
    (board, out)
}

/// Whether kubectl failed only because an emulated guest stalled past its HTTP/2 health
/// check or TLS handshake (several emulated machines share two cores in CI): worth one retry
/// of a command that is idempotent or a read.
pub fn transient_kubectl_error(stderr: &str) -> bool {
    [
        "client connection lost",
        "TLS handshake timeout",
        "connection reset",
    ]
    .iter()
    .any(|t| stderr.contains(t))
}
