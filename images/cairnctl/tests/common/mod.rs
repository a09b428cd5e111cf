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
