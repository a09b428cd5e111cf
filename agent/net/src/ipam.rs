//! Host-local address allocation, as the CNI `host-local` plugin keeps it: one file per
//! address handed out, named by the address and holding the key of its holder (the pod), plus
//! `last_reserved_ip` so that a freed address is not handed out again at once (a peer may
//! still have it in its ARP cache or a connection to it).
//!
//! The files are the whole state: they survive restarts of `cairn`, and re-asking for a key
//! that holds an address returns the same one. Never handed out: the network address, the
//! gateway (the first address) and the broadcast address. Not thread-safe on its own: the
//! [`crate::Network`] holds it behind a mutex (one kubelet per state directory).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::cidr::Ipv4Cidr;
use crate::Error;

const LAST: &str = "last_reserved_ip";

pub struct Ipam {
    dir: PathBuf,
    range: Ipv4Cidr,
}

impl Ipam {
    /// Allocations of `range` kept in `dir` (made if missing).
    pub fn open(dir: &Path, range: Ipv4Cidr) -> Result<Ipam, Error> {
        fs::create_dir_all(dir).map_err(|e| Error::state(dir, e))?;
        if range.pod_addresses().count() < 2 {
            return Err(Error::Config(format!(
                "the pod range {range} has no address for pods besides the gateway"
            )));
        }
        Ok(Ipam {
            dir: dir.to_owned(),
            range,
        })
    }

    pub fn range(&self) -> Ipv4Cidr {
        self.range
    }

    /// Addresses pods may get: the range's host addresses but the gateway.
    fn candidates(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.range.pod_addresses().skip(1)
    }

    /// Every allocation on file (also those outside the range, from an earlier one).
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, Error> {
        let mut all = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::state(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::state(&self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            match fs::read_to_string(entry.path()) {
                Ok(key) => all.push((ip, key.trim_end().to_owned())),
                // Released meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::state(&entry.path(), e)),
            }
        }
        all.sort();
        Ok(all)
    }

    /// The address `key` holds in the range.
    pub fn lookup(&self, key: &str) -> Result<Option<Ipv4Addr>, Error> {
        Ok(self
            .allocations()?
            .into_iter()
            .find(|(ip, k)| k == key && self.range.contains(*ip))
            .map(|(ip, _)| ip))
    }

    /// The address `key` holds, or the next free one after the last handed out.
    pub fn allocate(&self, key: &str) -> Result<Ipv4Addr, Error> {
        if key.is_empty() || key.contains(['\n', '/']) {
            return Err(Error::Config(format!(
                "{key:?} cannot hold an address (empty, or a newline or slash in it)"
            )));
        }
        if let Some(ip) = self.lookup(key)? {
            return Ok(ip);
        }
        let candidates: Vec<Ipv4Addr> = self.candidates().collect();
        let last = fs::read_to_string(self.dir.join(LAST))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
        let start = last
            .and_then(|ip| candidates.iter().position(|c| *c == ip))
            .map_or(0, |i| i + 1);
        for i in 0..candidates.len() {
            let ip = candidates[(start + i) % candidates.len()];
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(format!("{key}\n").as_bytes())
                        .map_err(|e| Error::state(&path, e))?;
                    let last = self.dir.join(LAST);
                    fs::write(&last, ip.to_string()).map_err(|e| Error::state(&last, e))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::state(&path, e)),
            }
        }
        Err(Error::Exhausted {
            range: self.range,
            count: candidates.len(),
        })
    }

    /// Frees every address `key` holds; returns them.
    pub fn release(&self, key: &str) -> Result<Vec<Ipv4Addr>, Error> {
        let mut freed = Vec::new();
        for (ip, k) in self.allocations()? {
            if k == key {
                self.release_address(ip)?;
                freed.push(ip);
            }
        }
        Ok(freed)
    }

    /// Frees one address, whoever holds it.
    pub fn release_address(&self, ip: Ipv4Addr) -> Result<(), Error> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::state(&path, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cairn-ipam-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn addresses_are_handed_out_once_kept_across_reopening_and_freed() {
        let dir = temp("basic");
        let range: Ipv4Cidr = "10.99.0.0/29".parse().unwrap();
        let ipam = Ipam::open(&dir, range).unwrap();
        // .0 network, .1 gateway, .7 broadcast: .2 to .6 are for pods.
        let a = ipam.allocate("pod-a").unwrap();
        let b = ipam.allocate("pod-b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 99, 0, 3));
        assert_eq!(ipam.allocate("pod-a").unwrap(), a, "same key, same address");
        assert_eq!(
            fs::read_to_string(dir.join("10.99.0.2")).unwrap(),
            "pod-a\n"
        );

        // A new Ipam over the same files (a restart) sees the same allocations.
        let again = Ipam::open(&dir, range).unwrap();
        assert_eq!(again.lookup("pod-b").unwrap(), Some(b));
        assert_eq!(again.allocate("pod-b").unwrap(), b);

        // A freed address is not reused before the others.
        assert_eq!(again.release("pod-a").unwrap(), vec![a]);
        assert_eq!(again.lookup("pod-a").unwrap(), None);
        let c = again.allocate("pod-c").unwrap();
        assert_eq!(c, Ipv4Addr::new(10, 99, 0, 4));
        assert!(again.release("nobody").unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_range_is_a_clear_error_and_wraps_around_once_freed() {
        let dir = temp("full");
        let range: Ipv4Cidr = "10.99.0.0/29".parse().unwrap();
        let ipam = Ipam::open(&dir, range).unwrap();
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| ipam.allocate(&format!("pod-{i}")).unwrap())
            .collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 99, 0, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 99, 0, 6)));
        let err = ipam.allocate("one-too-many").unwrap_err();
        assert!(matches!(err, Error::Exhausted { count: 5, .. }), "{err}");
        assert!(err.to_string().contains("10.99.0.0/29"), "{err}");
        ipam.release("pod-1").unwrap();
        assert_eq!(
            ipam.allocate("one-too-many").unwrap(),
            Ipv4Addr::new(10, 99, 0, 3)
        );
        assert!(ipam.allocate("bad\nkey").is_err());
        assert!(Ipam::open(&dir, "10.99.0.0/31".parse().unwrap()).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn allocations_of_an_old_range_are_not_returned_for_the_new_one() {
        let dir = temp("moved");
        let old = Ipam::open(&dir, "10.99.1.0/24".parse().unwrap()).unwrap();
        let first = old.allocate("pod").unwrap();
        let new = Ipam::open(&dir, "10.99.2.0/24".parse().unwrap()).unwrap();
        assert_eq!(new.lookup("pod").unwrap(), None);
        let second = new.allocate("pod").unwrap();
        assert_eq!(second, Ipv4Addr::new(10, 99, 2, 2));
        assert_eq!(new.release("pod").unwrap(), vec![first, second]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
