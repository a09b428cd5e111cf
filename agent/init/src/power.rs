//! The power button: `EV_KEY`/`KEY_POWER` presses read from `/dev/input/event*`. ACPI
//! (x86, arm64 with ACPI) and gpio-keys (arm64 `virt`) both report QEMU's
//! `system_powerdown` this way.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use nix::libc;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event`: a timeval (two `long`s: 16 bytes on 64-bit, 8 on 32-bit), then
/// u16 type, u16 code, i32 value, all in native byte order.
pub const EVENT_SIZE: usize = std::mem::size_of::<libc::input_event>();
const RESCAN: Duration = Duration::from_secs(30);

/// True when `buf` (whole events) holds a press (value 1) of `KEY_POWER`.
pub fn has_power_press(buf: &[u8]) -> bool {
    let t = EVENT_SIZE - 8;
    buf.chunks_exact(EVENT_SIZE).any(|ev| {
        let kind = u16::from_ne_bytes([ev[t], ev[t + 1]]);
        let code = u16::from_ne_bytes([ev[t + 2], ev[t + 3]]);
        let value = i32::from_ne_bytes([ev[t + 4], ev[t + 5], ev[t + 6], ev[t + 7]]);
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// Open input devices, rescanned now and then for late drivers.
pub struct Buttons {
    devices: Vec<(String, File)>,
    pub next_scan: Instant,
}

impl Buttons {
    pub fn new() -> Buttons {
        let mut b = Buttons {
            devices: Vec::new(),
            next_scan: Instant::now(),
        };
        b.scan();
        b
    }

    pub fn scan(&mut self) {
        self.next_scan = Instant::now() + RESCAN;
        let Ok(dir) = fs::read_dir("/dev/input") else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("event") || self.devices.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(entry.path());
            if let Ok(file) = file {
                self.devices.push((name, file));
            }
        }
    }

    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.devices.iter().map(|(_, f)| f.as_fd())
    }

    /// Reads the devices flagged in `ready` (same order as [`Buttons::fds`]); true on a press.
    /// Devices that fail (unplugged) are dropped.
    pub fn pressed(&mut self, ready: &[bool]) -> bool {
        let mut pressed = false;
        let mut buf = vec![0u8; EVENT_SIZE * 64];
        let mut keep = Vec::with_capacity(self.devices.len());
        for (i, (name, mut file)) in std::mem::take(&mut self.devices).into_iter().enumerate() {
            let mut alive = true;
            while ready.get(i).copied().unwrap_or(false) {
                match file.read(&mut buf) {
                    Ok(0) => {
                        alive = false;
                        break;
                    }
                    Ok(n) => pressed |= has_power_press(&buf[..n - n % EVENT_SIZE]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        alive = false;
                        break;
                    }
                }
            }
            if alive {
                keep.push((name, file));
            }
        }
        self.devices = keep;
        pressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut ev = vec![0xAAu8; EVENT_SIZE - 8];
        ev.extend_from_slice(&kind.to_ne_bytes());
        ev.extend_from_slice(&code.to_ne_bytes());
        ev.extend_from_slice(&value.to_ne_bytes());
        ev
    }

    #[test]
    fn layout_is_two_longs_and_eight_bytes() {
        assert_eq!(EVENT_SIZE, 2 * std::mem::size_of::<libc::c_long>() + 8);
    }

    #[test]
    fn power_press() {
        let syn = event(0, 0, 0);
        assert!(has_power_press(
            &[event(EV_KEY, KEY_POWER, 1), syn.clone()].concat()
        ));
        assert!(!has_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!has_power_press(&event(EV_KEY, KEY_POWER, 2)), "autorepeat");
        assert!(!has_power_press(&event(EV_KEY, 30, 1)), "another key");
        assert!(!has_power_press(&event(4, KEY_POWER, 1)), "EV_MSC");
        assert!(has_power_press(
            &[syn, event(EV_KEY, KEY_POWER, 1)].concat()
        ));
    }
}
