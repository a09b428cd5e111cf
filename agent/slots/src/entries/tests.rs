use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::{SlotState, Status};

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cairn-slots-{tag}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn spec(version: &str, slot: Slot) -> EntrySpec {
    EntrySpec {
        version: version.into(),
        linux: format!("/{slot}/vmlinuz"),
        initrd: format!("/{slot}/initrd.img"),
        options: "console=ttyS0".into(),
    }
}

fn names(e: &Entries<impl Ops>) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(e.dir())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Operations that stop, like a power cut, after a budget of primitive steps. A rename
/// is two steps, in the order FAT performs it (new name added, old name removed), so a cut
/// between them leaves both names.
struct CutOps {
    budget: Option<usize>,
    used: usize,
}

impl CutOps {
    fn new(budget: Option<usize>) -> CutOps {
        CutOps { budget, used: 0 }
    }

    fn step(&mut self) -> io::Result<()> {
        if self.budget.is_some_and(|b| self.used >= b) {
            return Err(io::Error::other("power cut"));
        }
        self.used += 1;
        Ok(())
    }
}

impl Ops for CutOps {
    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.step()?;
        RealOps.write(path, bytes)
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        fs::copy(from, to)?;
        self.step()?;
        fs::remove_file(from)
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.step()?;
        RealOps.remove(path)
    }

    fn sync_dir(&mut self, _dir: &Path) -> io::Result<()> {
        self.step()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Content {
    V1,
    Garbage,
    V2,
}

fn idx(s: Slot) -> usize {
    match s {
        Slot::A => 0,
        Slot::B => 1,
    }
}

/// A node on committed slot A updates slot B to v2, reboots into the trial and (if
/// `healthy`) commits. Returns at the first failed operation.
fn update(e: &mut Entries<CutOps>, disk: &mut [Content; 2], healthy: bool) -> io::Result<()> {
    e.forget(Slot::B)?;
    disk[1] = Content::Garbage;
    e.ops.step()?; // the partition write itself
    disk[1] = Content::V2;
    e.add_trial(Slot::B, &spec("0.2.0", Slot::B), 1)?;
    let booted = e.boot_next()?.expect("an entry boots");
    if booted.slot == Slot::B && healthy {
        e.commit(Slot::B)?;
    }
    Ok(())
}

fn fresh_node(tag: &str) -> (PathBuf, [Content; 2]) {
    let dir = temp_dir(tag);
    let mut e = Entries::with_ops(dir.clone(), RealOps);
    e.add_committed(Slot::A, &spec("0.1.0", Slot::A)).unwrap();
    (dir, [Content::V1, Content::Garbage])
}

#[test]
fn a_committed_slot_boots_without_any_renames() {
    let (dir, _) = fresh_node("committed");
    let mut e = Entries::with_ops(dir, RealOps);
    for _ in 0..3 {
        let b = e.boot_next().unwrap().unwrap();
        assert_eq!((b.slot, b.tries), (Slot::A, None));
    }
    assert_eq!(names(&e), ["slot-a.conf"]);
}

#[test]
fn update_trial_commit() {
    let (dir, _) = fresh_node("commit");
    let mut e = Entries::with_ops(dir, CutOps::new(None));
    e.forget(Slot::B).unwrap();
    let trial = e.add_trial(Slot::B, &spec("0.2.0", Slot::B), 1).unwrap();
    assert_eq!(trial.file, "slot-b+1.conf");
    assert_eq!(trial.generation(), Some(1));
    assert_eq!(names(&e), ["slot-a.conf", "slot-b+1.conf"]);

    let booted = e.boot_next().unwrap().unwrap();
    assert_eq!(booted.slot, Slot::B);
    assert_eq!(names(&e), ["slot-a.conf", "slot-b+0-1.conf"]);
    let st = Status::read(&e, Slot::B).unwrap();
    assert!(st.on_trial() && !st.rolled_back(), "{st:?}");
    assert_eq!(st.running_version.as_deref(), Some("0.2.0"));

    e.commit(Slot::B).unwrap();
    e.commit(Slot::B).unwrap(); // idempotent
    assert_eq!(names(&e), ["slot-a.conf", "slot-b.conf"]);
    let st = Status::read(&e, Slot::B).unwrap();
    assert_eq!(st.running_state, SlotState::Committed);
    assert_eq!(st.other_state, SlotState::Committed);
    assert_eq!(st.other_version.as_deref(), Some("0.1.0"));
    // From now on B boots, and keeps booting: it is the newer committed entry.
    for _ in 0..2 {
        assert_eq!(e.boot_next().unwrap().unwrap().slot, Slot::B);
    }

    // The next update goes to A and gets a sort key below B's.
    e.forget(Slot::A).unwrap();
    let t = e.add_trial(Slot::A, &spec("0.3.0", Slot::A), 1).unwrap();
    assert_eq!(t.generation(), Some(2));
    assert_eq!(e.boot_next().unwrap().unwrap().slot, Slot::A);
}

#[test]
fn an_uncommitted_trial_rolls_back_and_says_so() {
    let (dir, mut disk) = fresh_node("rollback");
    let mut e = Entries::with_ops(dir, CutOps::new(None));
    update(&mut e, &mut disk, false).unwrap();
    // The trial boot never committed: the next boot is A again.
    let booted = e.boot_next().unwrap().unwrap();
    assert_eq!(booted.slot, Slot::A);
    let st = Status::read(&e, Slot::A).unwrap();
    assert!(st.rolled_back(), "{st:?}");
    assert_eq!(
        st.other_state,
        SlotState::Failed(Tries { left: 0, done: 1 })
    );
    assert_eq!(st.other_version.as_deref(), Some("0.2.0"));
    // A rolled-back slot cannot be committed by accident later: it must be rewritten.
    e.forget(Slot::B).unwrap();
    assert!(e.commit(Slot::B).is_err());
    assert_eq!(names(&e), ["slot-a.conf"]);
}

#[test]
fn add_trial_refuses_a_slot_that_still_has_an_entry() {
    let (dir, _) = fresh_node("refuse");
    let mut e = Entries::with_ops(dir, RealOps);
    let err = e
        .add_trial(Slot::A, &spec("0.2.0", Slot::A), 1)
        .unwrap_err();
    assert!(err.to_string().contains("forget it"), "{err}");
}

/// Cuts the power after every single step of an update (healthy or not) and checks what
/// the next boots choose: always an entry, always a slot whose content is whole, and the new
/// slot only once it was completely written.
#[test]
fn a_power_cut_at_any_step_boots_a_whole_slot() {
    for healthy in [true, false] {
        let (dir, mut disk) = fresh_node("count");
        let mut e = Entries::with_ops(dir, CutOps::new(None));
        update(&mut e, &mut disk, healthy).unwrap();
        let total = e.ops.used;
        assert!(total >= 8, "only {total} steps");

        for cut in 0..=total {
            let (dir, mut disk) = fresh_node("cut");
            let mut e = Entries::with_ops(dir.clone(), CutOps::new(Some(cut)));
            let r = update(&mut e, &mut disk, healthy);
            assert_eq!(r.is_err(), cut < total, "cut {cut}/{total}");

            // Power back: boot a few times; a healthy trial commits.
            let mut e = Entries::with_ops(dir, RealOps);
            for boot in 0..3 {
                let b = e
                    .boot_next()
                    .unwrap()
                    .unwrap_or_else(|| panic!("cut {cut}: nothing to boot"));
                let content = disk[idx(b.slot)];
                assert_ne!(
                    content,
                    Content::Garbage,
                    "cut {cut}/{total} boot {boot}: booted half-written slot {} ({:?})",
                    b.slot,
                    names(&e)
                );
                let st = Status::read(&e, b.slot).unwrap();
                if st.on_trial() && healthy {
                    e.commit(b.slot).unwrap();
                }
            }
            if cut == total {
                let running = e.boot_next().unwrap().unwrap().slot;
                let st = Status::read(&e, running).unwrap();
                assert_eq!(st.running == Slot::B, healthy, "{st:?}");
            }
        }
    }
}
