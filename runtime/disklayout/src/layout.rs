//! The pure planner: from a disk inventory and the operator's options to a pool layout.
//!
//! The rules are SmartOS's (`smartos-live: src/node_modules/disklayout.js`), so a Linux
//! compute node gets the pool a SmartOS one would get from the same disks:
//!
//! - **Selection.** Disks that are not whole disks, excluded (`-e`), in use, read-only,
//!   removable, attached over USB or under 0.5 GB are skipped.
//! - **Size classes.** Each disk's size is rounded to the nearest marketed capacity point;
//!   disks are grouped by (transport, class, SSD or not), and groups of one media type whose
//!   classes are within 5% are merged (the smaller group joins the larger).
//! - **Roles.** One group: storage. Otherwise the spinning group with the largest smallest disk
//!   is storage and the other spinning groups are cache. With no spinning disks the largest SSD
//!   group is storage. Of the remaining SSD groups, the smallest becomes the log (slog) when it
//!   has fewer than 5 disks; the rest are cache. `-c` drops every cache assignment.
//! - **Layout.** Chosen by the number of storage disks left after explicit spares: 1 single,
//!   2 mirror, 3–4 raidz1, 5–6 raidz2 (raidz1 for SSDs or with explicit spares); from 7 disks
//!   an explicit width picks it, else see [`default_kind`]. Each layout then picks spares and
//!   the stripe width; the largest disks become the spares.
//!
//! Deliberate differences from SmartOS, each turning a failure or a surprise into a plain
//! answer: an explicit spare count that would leave a one-disk mirror is an error (SmartOS
//! wrote a layout `zpool` refuses); an over-large spare count is an error, not an assertion;
//! `raidz` is accepted for `raidz1`; size classes ignore a quirk that could put an exact-size
//! disk in the class below (grouping only; the 5% merge usually hid it); errors go to stderr
//! with nothing on stdout (SmartOS printed them into the JSON file).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::disk::{Disk, DiskKind};

/// What `vid`/`pid` say when sysfs has no vendor/model (as linuxcn's lsblk-based version).
const UNKNOWN: &str = "<unknown>";
/// Disk counts that no raidz width divides once explicit spares are taken out.
const AWKWARD_PRIMES: [usize; 13] = [17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67];
/// Above this smallest-disk size (bytes) wide pools prefer raidz2 over mirrors.
const BIG_DISK: u64 = 1_500_000_000_000;

/// A named layout (`disklayout`'s positional argument, `layout=` in the server's setup params).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    Single,
    Mirror,
    Raidz1,
    Raidz2,
    Raidz3,
}

/// The names [`LayoutKind::from_str`] accepts, for help and error text.
pub const SUPPORTED_LAYOUTS: &str = "single, mirror, raidz1 (or raidz), raidz2, raidz3";

impl FromStr for LayoutKind {
    type Err = LayoutError;
    fn from_str(s: &str) -> Result<Self, LayoutError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "single" => Ok(Self::Single),
            "mirror" => Ok(Self::Mirror),
            "raidz" | "raidz1" => Ok(Self::Raidz1),
            "raidz2" => Ok(Self::Raidz2),
            "raidz3" => Ok(Self::Raidz3),
            _ => Err(LayoutError::UnknownLayout(s.to_owned())),
        }
    }
}

impl fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Single => "single",
            Self::Mirror => "mirror",
            Self::Raidz1 => "raidz1",
            Self::Raidz2 => "raidz2",
            Self::Raidz3 => "raidz3",
        })
    }
}

/// The operator's choices; `Default` is a bare `disklayout` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub layout: Option<LayoutKind>,
    /// `-s`: exact number of hot spares.
    pub spares: Option<usize>,
    /// `-w`: exact stripe width (disks per mirror or raidz group).
    pub width: Option<usize>,
    /// `false` with `-c`: never assign cache devices.
    pub cache: bool,
    /// `-e`: disk names to leave alone (matched case-insensitively, `/dev/` optional).
    pub exclude: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { layout: None, spares: None, width: None, cache: true, exclude: Vec::new() }
    }
}

/// Why the planner must refuse. Each message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("unknown layout {0:?}; supported layouts: {SUPPORTED_LAYOUTS}")]
    UnknownLayout(String),
    #[error("no usable disks: {0}; attach a disk, or free or stop excluding one of those listed")]
    NoUsableDisks(String),
    #[error("every usable disk is excluded ({0}); remove some names from -e (disk_exclude)")]
    AllExcluded(String),
    #[error("no disk can hold the pool's data: {0}")]
    NoStorage(String),
    #[error("spares are not allowed for a single-disk pool; drop -s (disk_spares)")]
    SparesOnSingle,
    #[error("{spares} spare(s) is too many for {disks} storage disk(s); lower -s (disk_spares)")]
    TooManySpares { spares: usize, disks: usize },
    #[error(
        "{data} disks are left for data after {spares} spare(s), a prime number no layout splits \
         evenly; choose another -s (disk_spares)"
    )]
    AwkwardSpares { data: usize, spares: usize },
    #[error("a mirror needs at least 2 disks, found {0}; choose the single layout or add a disk")]
    MirrorTooFew(usize),
    #[error(
        "{data} disks are left for data after {spares} spare(s), which do not pair into mirrors; \
         choose another -s (disk_spares) or set -w (disk_width)"
    )]
    OddMirror { data: usize, spares: usize },
    #[error(
        "width {width} is not possible for {layout} with {disks} disks: it must be between {min} \
         and {disks}; change -w (disk_width) or the layout"
    )]
    InvalidWidth { width: usize, layout: LayoutKind, disks: usize, min: usize },
    #[error(
        "width {width} for {layout} does not fit the {data} disks left after {spares} spare(s); \
         lower -w (disk_width) or -s (disk_spares)"
    )]
    WidthAfterSpares { width: usize, layout: LayoutKind, data: usize, spares: usize },
    #[error("no acceptable {layout} layout with {disks} disks{}; choose another layout{}", spares_text(*.spares), if .spares.is_some() { " or spare count" } else { "" })]
    NoRaidzLayout { layout: LayoutKind, disks: usize, spares: Option<usize> },
}

fn spares_text(spares: Option<usize>) -> String {
    spares.map(|s| format!(" and {s} spare(s)")).unwrap_or_default()
}

/// A disk as it appears in the layout JSON (SmartOS's field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayoutDisk {
    pub name: String,
    /// Vendor id.
    pub vid: String,
    /// Product id (model).
    pub pid: String,
    /// Bytes.
    pub size: u64,
    pub solid_state: bool,
}

impl From<&Disk> for LayoutDisk {
    fn from(d: &Disk) -> Self {
        let or_unknown = |s: &Option<String>| s.clone().unwrap_or_else(|| UNKNOWN.to_owned());
        LayoutDisk {
            name: d.name.clone(),
            vid: or_unknown(&d.vendor),
            pid: or_unknown(&d.model),
            size: d.size,
            solid_state: d.solid_state,
        }
    }
}

/// A redundancy group's `type`, spelled as `zpool create` wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VdevType {
    Mirror,
    Raidz,
    Raidz2,
    Raidz3,
}

impl VdevType {
    /// Devices `zpool create` requires in one group of this type.
    pub fn min_devices(self) -> usize {
        match self {
            Self::Mirror | Self::Raidz => 2,
            Self::Raidz2 => 3,
            Self::Raidz3 => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mirror => "mirror",
            Self::Raidz => "raidz",
            Self::Raidz2 => "raidz2",
            Self::Raidz3 => "raidz3",
        }
    }

    /// Parses a `type` from layout JSON; `raidz1` is accepted for `raidz`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mirror" => Some(Self::Mirror),
            "raidz" | "raidz1" => Some(Self::Raidz),
            "raidz2" => Some(Self::Raidz2),
            "raidz3" => Some(Self::Raidz3),
            _ => None,
        }
    }
}

/// A top-level vdev: a group, or (single layout) one bare disk object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Vdev {
    Group {
        #[serde(rename = "type")]
        kind: VdevType,
        devices: Vec<LayoutDisk>,
    },
    Disk(LayoutDisk),
}

/// The layout `disklayout` prints and `mkzpool` consumes. Empty role lists are left out of
/// the JSON, as SmartOS does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub vdevs: Vec<Vdev>,
    /// Usable bytes: per group, (data disks) × (its smallest disk). joysetup.sh compares it
    /// with twice the RAM.
    pub capacity: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spares: Vec<LayoutDisk>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LayoutDisk>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache: Vec<LayoutDisk>,
}

impl Layout {
    /// Every disk the layout uses, in any role.
    pub fn disk_names(&self) -> impl Iterator<Item = &str> {
        let vdevs = self.vdevs.iter().flat_map(|v| match v {
            Vdev::Group { devices, .. } => devices.iter().collect::<Vec<_>>(),
            Vdev::Disk(d) => vec![d],
        });
        vdevs.chain(&self.spares).chain(&self.logs).chain(&self.cache).map(|d| d.name.as_str())
    }

    /// Tab-indented JSON, as SmartOS prints it.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut out = Vec::new();
        let mut ser =
            serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"\t"));
        self.serialize(&mut ser)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Why a disk was left out before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    NotADisk(&'static str),
    Excluded,
    InUse(Vec<String>),
    ReadOnly,
    Removable,
    Usb,
    TooSmall,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotADisk(what) => write!(f, "{what}"),
            Self::Excluded => f.write_str("excluded by -e (disk_exclude)"),
            Self::InUse(why) => write!(f, "in use: {}", why.join(", ")),
            Self::ReadOnly => f.write_str("read-only"),
            Self::Removable => f.write_str("removable medium"),
            Self::Usb => f.write_str("attached over USB (boot key or external drive)"),
            Self::TooSmall => f.write_str("smaller than 0.5 GB"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub reason: SkipReason,
}

/// The planner's answer: the layout plus what was left out and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub layout: Layout,
    /// Devices never considered (every block device that is not a usable disk).
    pub skipped: Vec<Skipped>,
    /// Usable disks the layout does not use (smaller groups with `-c`, leftovers of a fixed
    /// width).
    pub unused: Vec<String>,
    /// `-e` names that match no device (typos are worth a warning).
    pub unknown_excludes: Vec<String>,
}

/// Normalises one `-e` entry: lower case, no `/dev/`.
fn exclude_key(name: &str) -> String {
    let name = name.trim();
    name.strip_prefix("/dev/").unwrap_or(name).to_ascii_lowercase()
}

fn skip_reason(d: &Disk, excluded: &HashSet<String>) -> Option<SkipReason> {
    Some(match d.kind {
        DiskKind::Other(what) => SkipReason::NotADisk(what),
        DiskKind::Disk if excluded.contains(&d.name.to_ascii_lowercase()) => SkipReason::Excluded,
        DiskKind::Disk if !d.in_use.is_empty() => SkipReason::InUse(d.in_use.clone()),
        DiskKind::Disk if d.read_only => SkipReason::ReadOnly,
        DiskKind::Disk if d.removable => SkipReason::Removable,
        DiskKind::Disk if d.is_usb() => SkipReason::Usb,
        DiskKind::Disk if rounded_mb(d.size) == 0 => SkipReason::TooSmall,
        DiskKind::Disk => return None,
    })
}

/// Selects the usable disks and computes their layout.
pub fn plan(disks: &[Disk], opts: &Options) -> Result<Plan, LayoutError> {
    let excluded: HashSet<String> = opts.exclude.iter().map(|e| exclude_key(e)).filter(|e| !e.is_empty()).collect();
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for d in disks {
        match skip_reason(d, &excluded) {
            Some(reason) => skipped.push(Skipped { name: d.name.clone(), reason }),
            None => usable.push(d),
        }
    }
    let known: HashSet<String> = disks.iter().map(|d| d.name.to_ascii_lowercase()).collect();
    let mut unknown_excludes: Vec<String> = excluded.difference(&known).cloned().collect();
    unknown_excludes.sort();

    if usable.is_empty() {
        let real: Vec<&Skipped> = skipped.iter().filter(|s| !matches!(s.reason, SkipReason::NotADisk(_))).collect();
        if !real.is_empty() && real.iter().all(|s| s.reason == SkipReason::Excluded) {
            let names: Vec<&str> = real.iter().map(|s| s.name.as_str()).collect();
            return Err(LayoutError::AllExcluded(names.join(", ")));
        }
        let detail = match real.is_empty() {
            true => "no disks found".to_owned(),
            false => real.iter().map(|s| format!("{} ({})", s.name, s.reason)).collect::<Vec<_>>().join(", "),
        };
        return Err(LayoutError::NoUsableDisks(detail));
    }

    let layout = compute(&usable, opts)?;
    let used: HashSet<&str> = layout.disk_names().collect();
    let unused = usable.iter().filter(|d| !used.contains(d.name.as_str())).map(|d| d.name.clone()).collect();
    Ok(Plan { layout, skipped, unused, unknown_excludes })
}

/// Size class in MB: the marketed capacity point (a multiple of 1000, 4500, 20000, 80000,
/// 150000 or 500000 MB) within 5% of the size that fits best, larger points preferred; else
/// the size rounded to a whole GB. 0 means "too small to use".
pub fn rounded_mb(bytes: u64) -> u64 {
    const STEPS: [f64; 6] = [500_000.0, 150_000.0, 80_000.0, 20_000.0, 4_500.0, 1_000.0];
    let mb = bytes as f64 / 1_000_000.0;
    if mb <= 0.0 {
        return 0;
    }
    let mut best: Option<(f64, f64)> = None;
    for step in STEPS {
        let point = ((mb + (step / 2.0).floor()) / step).floor() * step;
        if (mb - point).abs() / mb > 0.05 {
            continue;
        }
        // Distance, weighted so that a coarse point far up its scale is not chosen lightly.
        let score = (mb - point).powi(2) * (point / step).powi(4);
        if best.is_none_or(|(_, s)| score < s) {
            best = Some((point, score));
        }
    }
    match best {
        Some((point, _)) => point as u64,
        None => ((mb / 1000.0).round() * 1000.0) as u64,
    }
}

/// Disks of one transport, size class and media type.
#[derive(Debug)]
struct Group {
    transport: String,
    class_mb: u64,
    solid_state: bool,
    disks: Vec<LayoutDisk>,
}

impl Group {
    fn smallest(&self) -> u64 {
        self.disks.iter().map(|d| d.size).min().unwrap_or(0)
    }

    /// The group's disks ordered by size, then name: the order roles and vdevs use.
    fn sorted(mut self) -> Vec<LayoutDisk> {
        self.disks.sort_by(|a, b| a.size.cmp(&b.size).then_with(|| a.name.cmp(&b.name)));
        self.disks
    }
}

fn groups(disks: &[&Disk]) -> Vec<Group> {
    let mut groups: Vec<Option<Group>> = Vec::new();
    for d in disks {
        let class_mb = rounded_mb(d.size);
        let found = groups
            .iter_mut()
            .flatten()
            .find(|g| g.transport == d.transport && g.class_mb == class_mb && g.solid_state == d.solid_state);
        match found {
            Some(g) => g.disks.push(LayoutDisk::from(*d)),
            None => groups.push(Some(Group {
                transport: d.transport.clone(),
                class_mb,
                solid_state: d.solid_state,
                disks: vec![LayoutDisk::from(*d)],
            })),
        }
    }
    // Merge groups of one media type whose classes are within 5%; the group with fewer disks
    // joins the other (on a tie the earlier one joins the later one).
    for i in 0..groups.len() {
        for j in 0..groups.len() {
            let (Some(a), Some(b)) = (&groups[i], &groups[j]) else { continue };
            if i == j || a.solid_state != b.solid_state {
                continue;
            }
            if (a.class_mb as f64 - b.class_mb as f64).abs() / b.class_mb as f64 > 0.05 {
                continue;
            }
            let (into, from) = if a.disks.len() > b.disks.len() { (i, j) } else { (j, i) };
            if let Some(taken) = groups[from].take() {
                if let Some(g) = groups[into].as_mut() {
                    g.disks.extend(taken.disks);
                }
            }
        }
    }
    groups.into_iter().flatten().collect()
}

#[derive(Debug, Default)]
struct Roles {
    storage: Vec<LayoutDisk>,
    logs: Vec<LayoutDisk>,
    cache: Vec<LayoutDisk>,
}

fn assign_roles(mut groups: Vec<Group>, cache: bool) -> Roles {
    let mut roles = Roles::default();
    if groups.len() <= 1 {
        roles.storage = groups.pop().map(Group::sorted).unwrap_or_default();
        return roles;
    }
    let (mut ssd, mut spinning): (Vec<Group>, Vec<Group>) = groups.into_iter().partition(|g| g.solid_state);
    ssd.sort_by_key(Group::smallest);
    spinning.sort_by_key(Group::smallest);

    if let Some(largest) = spinning.pop() {
        roles.storage = largest.sorted();
    }
    if cache {
        spinning.into_iter().for_each(|g| roles.cache.extend(g.sorted()));
    }
    if roles.storage.is_empty() {
        match ssd.pop() {
            Some(largest) => roles.storage = largest.sorted(),
            None => return roles,
        }
    }
    if ssd.first().is_some_and(|g| g.disks.len() < 5) {
        roles.logs = ssd.remove(0).sorted();
    }
    if cache {
        ssd.into_iter().for_each(|g| roles.cache.extend(g.sorted()));
    }
    roles
}

/// Computes the layout of disks already known to be usable.
pub fn compute(usable: &[&Disk], opts: &Options) -> Result<Layout, LayoutError> {
    let roles = assign_roles(groups(usable), opts.cache);
    if roles.storage.is_empty() {
        return Err(LayoutError::NoStorage(format!("{} usable disk(s) but no storage group", usable.len())));
    }
    check_spares(roles.storage.len(), opts.spares)?;
    let kind = opts.layout.unwrap_or_else(|| default_kind(&roles.storage, opts.spares, opts.width));
    let mut layout = match kind {
        LayoutKind::Single => single(roles.storage, opts.spares)?,
        LayoutKind::Mirror => mirror(roles.storage, opts.spares, opts.width)?,
        LayoutKind::Raidz1 => raidz(&RAIDZ1, roles.storage, opts.spares, opts.width)?,
        LayoutKind::Raidz2 => raidz(&RAIDZ2, roles.storage, opts.spares, opts.width)?,
        LayoutKind::Raidz3 => raidz(&RAIDZ3, roles.storage, opts.spares, opts.width)?,
    };
    layout.logs = roles.logs;
    layout.cache = roles.cache;
    Ok(layout)
}

fn check_spares(disks: usize, spares: Option<usize>) -> Result<(), LayoutError> {
    let Some(spares) = spares else { return Ok(()) };
    if spares > 0 && disks.saturating_sub(spares) < 2 {
        return Err(LayoutError::TooManySpares { spares, disks });
    }
    let data = disks - spares.min(disks);
    if AWKWARD_PRIMES.contains(&data) {
        return Err(LayoutError::AwkwardSpares { data, spares });
    }
    Ok(())
}

/// The layout used when none is named, from the storage disks left after explicit spares
/// (`storage` is sorted, smallest first).
pub fn default_kind(storage: &[LayoutDisk], spares: Option<usize>, width: Option<usize>) -> LayoutKind {
    let avail = storage.len().saturating_sub(spares.unwrap_or(0));
    let ssd = storage.first().is_some_and(|d| d.solid_state);
    let big = storage.first().is_some_and(|d| d.size > BIG_DISK);
    match (avail, width) {
        (0 | 1, _) => LayoutKind::Single,
        (2, _) => LayoutKind::Mirror,
        (3 | 4, _) => LayoutKind::Raidz1,
        (5 | 6, _) if ssd || spares.is_some() => LayoutKind::Raidz1,
        (5 | 6, _) => LayoutKind::Raidz2,
        // From 7 disks an explicit width picks the layout.
        (_, Some(..=2)) => LayoutKind::Mirror,
        (_, Some(3..=6)) => LayoutKind::Raidz1,
        (_, Some(7..=12)) => LayoutKind::Raidz2,
        (_, Some(_)) => LayoutKind::Raidz3,
        // Many disks, or big ones: raidz2, unless fixed spares leave a count it cannot split.
        _ if avail > 16 || (avail > RAIDZ2.min && big) => match spares {
            None => LayoutKind::Raidz2,
            Some(_) if (RAIDZ2.min..=RAIDZ2.max).any(|w| avail.is_multiple_of(w)) => LayoutKind::Raidz2,
            Some(_) if avail == 13 => LayoutKind::Raidz3,
            Some(_) => LayoutKind::Raidz1,
        },
        // 7 to 11 SSDs.
        _ if avail < RAIDZ2.max && ssd => LayoutKind::Raidz2,
        // Up to 16 disks: mirrors (plus spares); with fixed spares an odd count needs raidz.
        _ => match (!avail.is_multiple_of(2), spares) {
            (false, _) | (true, None) => LayoutKind::Mirror,
            (true, Some(_)) if avail == 15 => LayoutKind::Raidz1,
            (true, Some(_)) if avail == 13 => LayoutKind::Raidz3,
            (true, Some(_)) => LayoutKind::Raidz2,
        },
    }
}

fn single(storage: Vec<LayoutDisk>, spares: Option<usize>) -> Result<Layout, LayoutError> {
    if spares.unwrap_or(0) != 0 {
        return Err(LayoutError::SparesOnSingle);
    }
    // SmartOS uses the smallest storage disk and nothing else.
    let disk = storage.into_iter().next().ok_or_else(|| LayoutError::NoStorage("no storage disks".to_owned()))?;
    Ok(Layout { capacity: disk.size, vdevs: vec![Vdev::Disk(disk)], spares: vec![], logs: vec![], cache: vec![] })
}

/// Takes the `count` largest disks (the end of the sorted list) as spares: a large disk can
/// stand in for a smaller one, not the reverse.
fn split_spares(mut disks: Vec<LayoutDisk>, count: usize) -> (Vec<LayoutDisk>, Vec<LayoutDisk>) {
    let spares = disks.split_off(disks.len() - count.min(disks.len()));
    (disks, spares)
}

/// Groups of exactly `width` disks (a shorter tail stays unused) and their capacity.
fn build(data: &[LayoutDisk], kind: VdevType, width: usize, parity: usize, spares: Vec<LayoutDisk>) -> Layout {
    let chunks = data.chunks_exact(width);
    let capacity = chunks.clone().map(|c| c[0].size * (width - parity) as u64).sum();
    let vdevs = chunks.map(|c| Vdev::Group { kind, devices: c.to_vec() }).collect();
    Layout { vdevs, capacity, spares, logs: vec![], cache: vec![] }
}

fn mirror(storage: Vec<LayoutDisk>, spares: Option<usize>, width: Option<usize>) -> Result<Layout, LayoutError> {
    let n = storage.len();
    if n < 2 {
        return Err(LayoutError::MirrorTooFew(n));
    }
    let width_fixed = width.is_some();
    let width = match width {
        None => 2,
        Some(w) => {
            let avail = match spares {
                Some(s) if s >= n => return Err(LayoutError::TooManySpares { spares: s, disks: n }),
                Some(s) => n - s,
                None => n,
            };
            if w < 2 || w > avail {
                return Err(LayoutError::InvalidWidth { width: w, layout: LayoutKind::Mirror, disks: avail, min: 2 });
            }
            w
        }
    };
    let nspares = match spares {
        None if width_fixed => n % width,
        None if n == 2 || n == 4 => 0,
        // One spare per 16 disks, plus whatever does not pair up.
        None => {
            let s = n.div_ceil(16);
            s + (n - s) % width
        }
        Some(s) if s > n - width => return Err(LayoutError::TooManySpares { spares: s, disks: n }),
        Some(s) => s,
    };
    let (data, spare_disks) = split_spares(storage, nspares);
    if !width_fixed && !data.len().is_multiple_of(width) {
        return Err(LayoutError::OddMirror { data: data.len(), spares: nspares });
    }
    Ok(build(&data, VdevType::Mirror, width, width - 1, spare_disks))
}

/// Stripe-width rules of one raidz level.
#[derive(Debug)]
struct Raidz {
    kind: LayoutKind,
    vdev: VdevType,
    parity: usize,
    min: usize,
    max: usize,
    /// One default spare per this many disks (at most 2).
    disks_per_spare: usize,
    /// Disk counts allowed as one narrow group of exactly that width (supported, though slow
    /// on spinning disks).
    narrow: [usize; 2],
}

const RAIDZ1: Raidz = Raidz {
    kind: LayoutKind::Raidz1,
    vdev: VdevType::Raidz,
    parity: 1,
    min: 3,
    max: 6,
    disks_per_spare: 7,
    narrow: [0, 0],
};
const RAIDZ2: Raidz = Raidz {
    kind: LayoutKind::Raidz2,
    vdev: VdevType::Raidz2,
    parity: 2,
    min: 7,
    max: 12,
    disks_per_spare: 12,
    narrow: [5, 6],
};
const RAIDZ3: Raidz = Raidz {
    kind: LayoutKind::Raidz3,
    vdev: VdevType::Raidz3,
    parity: 3,
    min: 9,
    max: 20,
    disks_per_spare: 15,
    narrow: [7, 8],
};

fn raidz(
    z: &Raidz,
    storage: Vec<LayoutDisk>,
    spares: Option<usize>,
    width: Option<usize>,
) -> Result<Layout, LayoutError> {
    let n = storage.len();
    let (min, max) = if z.narrow.contains(&n) { (n, n) } else { (z.min, z.max) };
    let (mut nspares, spares_fixed) = match spares {
        None => ((n / z.disks_per_spare).min(2), false),
        Some(s) if s < n => (s, true),
        Some(s) => return Err(LayoutError::TooManySpares { spares: s, disks: n }),
    };
    let no_layout =
        |spares: usize| LayoutError::NoRaidzLayout { layout: z.kind, disks: n, spares: spares_fixed.then_some(spares) };
    let width = match width {
        // An explicit width may exceed the default maximum, up to the disk count.
        Some(w) => {
            if w < min || w > n {
                return Err(LayoutError::InvalidWidth { width: w, layout: z.kind, disks: n, min });
            }
            if !spares_fixed {
                nspares = n % w;
            } else if n - nspares < w {
                return Err(LayoutError::WidthAfterSpares {
                    width: w,
                    layout: z.kind,
                    data: n - nspares,
                    spares: nspares,
                });
            }
            w
        }
        // The narrowest width that divides the data disks; add spares until one does.
        None => loop {
            let data = n.saturating_sub(nspares);
            if data < min {
                return Err(no_layout(nspares));
            }
            if let Some(w) = (min..=max).find(|&w| data.is_multiple_of(w)) {
                break w;
            }
            if spares_fixed {
                return Err(no_layout(nspares));
            }
            nspares += 1;
        },
    };
    if n - nspares < min {
        return Err(no_layout(nspares));
    }
    let (data, spare_disks) = split_spares(storage, nspares);
    Ok(build(&data, z.vdev, width, z.parity, spare_disks))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const TB: u64 = 1_000_204_886_016; // a "1 TB" disk
    const GB: u64 = 1_000_000_000;

    fn hdds(n: usize, size: u64) -> Vec<Disk> {
        (0..n).map(|i| Disk::whole(&format!("sd{}", (b'a' + i as u8) as char), size, false)).collect()
    }

    fn ssds(prefix: &str, n: usize, size: u64) -> Vec<Disk> {
        (0..n)
            .map(|i| Disk { transport: "NVME".into(), ..Disk::whole(&format!("{prefix}{i}n1"), size, true) })
            .collect()
    }

    fn run(disks: &[Disk], opts: &Options) -> Result<Layout, LayoutError> {
        plan(disks, opts).map(|p| p.layout)
    }

    fn auto(disks: &[Disk]) -> Layout {
        match run(disks, &Options::default()) {
            Ok(l) => l,
            Err(e) => panic!("layout failed: {e}"),
        }
    }

    /// (type or "disk", device count) per vdev, and the spare count.
    fn shape(l: &Layout) -> (Vec<(String, usize)>, usize) {
        let vdevs = l
            .vdevs
            .iter()
            .map(|v| match v {
                Vdev::Group { kind, devices } => (kind.as_str().to_owned(), devices.len()),
                Vdev::Disk(_) => ("disk".to_owned(), 1),
            })
            .collect();
        (vdevs, l.spares.len())
    }

    fn groups_of(kind: &str, n: usize, width: usize) -> Vec<(String, usize)> {
        vec![(kind.to_owned(), width); n]
    }

    #[test]
    fn default_layouts_by_disk_count() {
        assert_eq!(shape(&auto(&hdds(1, TB))), (vec![("disk".into(), 1)], 0));
        assert_eq!(shape(&auto(&hdds(2, TB))), (groups_of("mirror", 1, 2), 0));
        assert_eq!(shape(&auto(&hdds(3, TB))), (groups_of("raidz", 1, 3), 0));
        assert_eq!(shape(&auto(&hdds(4, TB))), (groups_of("raidz", 1, 4), 0));
        assert_eq!(shape(&auto(&hdds(5, TB))), (groups_of("raidz2", 1, 5), 0));
        assert_eq!(shape(&auto(&hdds(6, TB))), (groups_of("raidz2", 1, 6), 0));
        // Even counts up to 16 of small disks: mirrors, one spare per 16 plus the odd one out.
        assert_eq!(shape(&auto(&hdds(8, TB))), (groups_of("mirror", 3, 2), 2));
        assert_eq!(shape(&auto(&hdds(12, TB))), (groups_of("mirror", 5, 2), 2));
    }

    #[test]
    fn big_disks_and_ssds_prefer_raidz() {
        assert_eq!(shape(&auto(&hdds(8, 4 * TB))), (groups_of("raidz2", 1, 8), 0));
        assert_eq!(shape(&auto(&hdds(12, 4 * TB))), (groups_of("raidz2", 1, 11), 1));
        assert_eq!(shape(&auto(&ssds("nvme", 5, TB))), (groups_of("raidz", 1, 5), 0));
        assert_eq!(shape(&auto(&ssds("nvme", 8, TB))), (groups_of("raidz2", 1, 8), 0));
        assert_eq!(shape(&auto(&hdds(20, TB))), (groups_of("raidz2", 2, 9), 2));
    }

    #[test]
    fn capacity_counts_data_disks_of_the_smallest_member() {
        assert_eq!(auto(&hdds(1, TB)).capacity, TB);
        assert_eq!(auto(&hdds(2, TB)).capacity, TB);
        assert_eq!(auto(&hdds(4, TB)).capacity, 3 * TB);
        assert_eq!(auto(&hdds(6, TB)).capacity, 4 * TB);
        assert_eq!(auto(&hdds(8, TB)).capacity, 3 * TB);
        let mut mixed = hdds(2, TB);
        mixed[1].size = TB + 10 * GB; // same class, slightly larger
        assert_eq!(auto(&mixed).capacity, TB);
    }

    #[test]
    fn spares_are_the_largest_disks() {
        let mut disks = hdds(3, TB);
        disks[0].size = TB + 5 * GB;
        let l = auto(&disks); // 3 disks: raidz1 3-wide, no spares; force a mirror instead
        assert_eq!(shape(&l), (groups_of("raidz", 1, 3), 0));
        let l = run(&disks, &Options { layout: Some(LayoutKind::Mirror), ..Options::default() }).unwrap();
        assert_eq!(l.spares.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["sda"]);
    }

    #[test]
    fn ssd_log_and_cache_roles() {
        // Few small SSDs next to spinning storage: log devices.
        let mut disks = hdds(4, 4 * TB);
        disks.extend(ssds("nvme", 2, 200 * GB));
        let l = auto(&disks);
        assert_eq!(shape(&l), (groups_of("raidz", 1, 4), 0));
        assert_eq!(l.logs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["nvme0n1", "nvme1n1"]);
        assert!(l.cache.is_empty());
        // Five or more: cache. Smaller spinning disks: cache too.
        let mut disks = hdds(4, 4 * TB);
        disks.extend(ssds("nvme", 6, 200 * GB));
        disks.push(Disk::whole("sdz", TB, false));
        let l = auto(&disks);
        assert!(l.logs.is_empty());
        assert_eq!(l.cache.len(), 7);
        assert_eq!(l.cache[0].name, "sdz");
        // Two SSD sizes, no spinning disks: the large ones store, the small few log.
        let mut disks = ssds("nvme", 4, 2 * TB);
        disks.extend(ssds("nvmes", 2, 100 * GB));
        let l = auto(&disks);
        assert_eq!(shape(&l), (groups_of("raidz", 1, 4), 0));
        assert_eq!(l.logs.len(), 2);
    }

    #[test]
    fn no_cache_flag_leaves_cache_candidates_unused_but_keeps_logs() {
        let mut disks = hdds(4, 4 * TB);
        disks.extend(ssds("nvme", 6, 200 * GB));
        disks.extend(ssds("nvmesmall", 2, 100 * GB));
        let p = plan(&disks, &Options { cache: false, ..Options::default() }).unwrap();
        assert!(p.layout.cache.is_empty());
        assert_eq!(p.layout.logs.len(), 2);
        assert_eq!(p.unused.len(), 6);
    }

    #[test]
    fn explicit_layout_spares_and_width() {
        let opts = |layout, spares, width| Options { layout, spares, width, ..Options::default() };
        let d6 = hdds(6, TB);
        assert_eq!(
            shape(&run(&d6, &opts(Some(LayoutKind::Mirror), None, None)).unwrap()),
            (groups_of("mirror", 2, 2), 2)
        );
        assert_eq!(
            shape(&run(&d6, &opts(Some(LayoutKind::Mirror), Some(0), None)).unwrap()),
            (groups_of("mirror", 3, 2), 0)
        );
        assert_eq!(
            shape(&run(&d6, &opts(Some(LayoutKind::Mirror), None, Some(3))).unwrap()),
            (groups_of("mirror", 2, 3), 0)
        );
        assert_eq!(
            shape(&run(&d6, &opts(Some(LayoutKind::Raidz1), None, None)).unwrap()),
            (groups_of("raidz", 2, 3), 0)
        );
        assert_eq!(shape(&run(&d6, &opts(None, Some(1), None)).unwrap()), (groups_of("raidz", 1, 5), 1));
        assert_eq!(shape(&run(&hdds(5, TB), &opts(None, None, Some(5))).unwrap()), (groups_of("raidz2", 1, 5), 0));
        // From 7 disks the width picks the layout; leftovers of a fixed width become spares.
        assert_eq!(shape(&run(&hdds(8, TB), &opts(None, None, Some(2))).unwrap()), (groups_of("mirror", 4, 2), 0));
        assert_eq!(shape(&run(&hdds(8, TB), &opts(None, None, Some(3))).unwrap()), (groups_of("raidz", 2, 3), 2));
        assert_eq!(shape(&run(&hdds(14, TB), &opts(None, None, Some(7))).unwrap()), (groups_of("raidz2", 2, 7), 0));
        // A fixed width leaves the tail unused rather than making spares of it when spares are fixed.
        let p = plan(&hdds(7, TB), &opts(Some(LayoutKind::Raidz1), Some(0), Some(3))).unwrap();
        assert_eq!(shape(&p.layout), (groups_of("raidz", 2, 3), 0));
        assert_eq!(p.unused, ["sdg"]);
        let l = run(&hdds(8, TB), &opts(Some(LayoutKind::Raidz3), None, None)).unwrap();
        assert_eq!(shape(&l), (groups_of("raidz3", 1, 8), 0));
        assert_eq!(run(&hdds(3, TB), &opts(Some(LayoutKind::Single), None, None)).unwrap().capacity, TB);
    }

    #[test]
    fn impossible_requests_are_errors() {
        let opts = |layout, spares, width| Options { layout, spares, width, ..Options::default() };
        let err = |d: &[Disk], o: Options| run(d, &o).unwrap_err();
        assert_eq!(err(&hdds(1, TB), opts(None, Some(1), None)), LayoutError::TooManySpares { spares: 1, disks: 1 });
        assert_eq!(err(&hdds(3, TB), opts(Some(LayoutKind::Single), Some(1), None)), LayoutError::SparesOnSingle);
        assert_eq!(err(&hdds(1, TB), opts(Some(LayoutKind::Mirror), None, None)), LayoutError::MirrorTooFew(1));
        assert_eq!(
            err(&hdds(5, TB), opts(Some(LayoutKind::Mirror), Some(0), None)),
            LayoutError::OddMirror { data: 5, spares: 0 }
        );
        assert!(matches!(err(&hdds(4, TB), opts(None, None, Some(5))), LayoutError::InvalidWidth { width: 5, .. }));
        // Below 7 disks the count picks the layout, and a width it cannot take is refused.
        assert!(matches!(err(&hdds(4, TB), opts(None, None, Some(2))), LayoutError::InvalidWidth { min: 3, .. }));
        assert!(matches!(
            err(&hdds(8, TB), opts(Some(LayoutKind::Raidz2), None, Some(3))),
            LayoutError::InvalidWidth { width: 3, min: 7, .. }
        ));
        assert!(matches!(
            err(&hdds(2, TB), opts(Some(LayoutKind::Raidz1), None, None)),
            LayoutError::NoRaidzLayout { .. }
        ));
        assert!(matches!(
            err(&hdds(8, TB), opts(Some(LayoutKind::Raidz1), Some(1), None)),
            LayoutError::NoRaidzLayout { spares: Some(1), .. }
        ));
        assert_eq!(err(&hdds(18, TB), opts(None, Some(1), None)), LayoutError::AwkwardSpares { data: 17, spares: 1 });
        assert!(matches!(
            err(&hdds(6, TB), opts(Some(LayoutKind::Raidz1), Some(4), Some(3))),
            LayoutError::WidthAfterSpares { .. }
        ));
        assert!(matches!("raid5".parse::<LayoutKind>(), Err(LayoutError::UnknownLayout(_))));
        assert_eq!("RAIDZ".parse::<LayoutKind>(), Ok(LayoutKind::Raidz1));
    }

    #[test]
    fn selection_skips_and_explains() {
        let mut disks = hdds(4, TB);
        disks[0].in_use = vec!["sda1 is mounted at /".into()];
        disks[1].removable = true;
        disks[2].transport = "USB".into();
        disks.push(Disk { kind: DiskKind::Other("ZFS zvol"), ..Disk::whole("zd0", TB, false) });
        disks.push(Disk::whole("sdt", 100_000_000, false));
        let p = plan(&disks, &Options { exclude: vec!["/dev/SDX".into()], ..Options::default() }).unwrap();
        assert_eq!(shape(&p.layout), (vec![("disk".into(), 1)], 0));
        let reasons: Vec<_> = p.skipped.iter().map(|s| (s.name.as_str(), s.reason.clone())).collect();
        assert_eq!(reasons.len(), 5);
        assert!(reasons.contains(&("sdt", SkipReason::TooSmall)));
        assert!(reasons.contains(&("sdc", SkipReason::Usb)));
        assert_eq!(p.unknown_excludes, ["sdx"]);
    }

    #[test]
    fn no_disks_and_all_excluded() {
        let zvol = Disk { kind: DiskKind::Other("ZFS zvol"), ..Disk::whole("zd0", TB, false) };
        assert_eq!(run(&[zvol], &Options::default()), Err(LayoutError::NoUsableDisks("no disks found".into())));
        let all = Options { exclude: vec!["sda sdb".into(), "SDA".into()], ..Options::default() };
        let all =
            Options { exclude: all.exclude.iter().flat_map(|e| e.split(' ')).map(str::to_owned).collect(), ..all };
        assert_eq!(run(&hdds(2, TB), &all), Err(LayoutError::AllExcluded("sda, sdb".into())));
        let mut busy = hdds(1, TB);
        busy[0].in_use = vec!["sda is swap".into()];
        let err = run(&busy, &Options::default()).unwrap_err().to_string();
        assert!(err.contains("sda (in use: sda is swap)"), "{err}");
    }

    #[test]
    fn size_classes() {
        assert_eq!(rounded_mb(0), 0);
        assert_eq!(rounded_mb(100_000_000), 0);
        assert_eq!(rounded_mb(TB), 1_000_000);
        assert_eq!(rounded_mb(4 * TB), 4_000_000);
        assert_eq!(rounded_mb(10 * (1 << 30)), 11_000); // a 10 GiB virtual disk
        assert_eq!(rounded_mb(500 * GB), 500_000);
        assert_eq!(rounded_mb(480 * GB), 480_000);
    }

    #[test]
    fn json_shape_matches_smartos() {
        let mut disks = hdds(3, TB);
        disks[0].vendor = Some("ATA".into());
        disks.extend(ssds("nvme", 1, 200 * GB));
        let l = run(&disks, &Options { layout: Some(LayoutKind::Mirror), ..Options::default() }).unwrap();
        let v: serde_json::Value = serde_json::from_str(&l.to_json().unwrap()).unwrap();
        assert_eq!(v["vdevs"][0]["type"], "mirror");
        assert_eq!(v["vdevs"][0]["devices"][0]["name"], "sda");
        assert_eq!(v["vdevs"][0]["devices"][0]["vid"], "ATA");
        assert_eq!(v["vdevs"][0]["devices"][1]["pid"], "<unknown>");
        assert_eq!(v["vdevs"][0]["devices"][0]["size"], TB);
        assert_eq!(v["vdevs"][0]["devices"][0]["solid_state"], false);
        assert_eq!(v["spares"][0]["name"], "sdc");
        assert_eq!(v["logs"][0]["name"], "nvme0n1");
        assert_eq!(v["capacity"], TB);
        assert!(v.get("cache").is_none());
        let single = serde_json::to_value(auto(&hdds(1, TB))).unwrap();
        assert_eq!(single["vdevs"][0]["name"], "sda");
        assert!(single["vdevs"][0].get("type").is_none());
        assert!(l.to_json().unwrap().contains("\n\t\"vdevs\""));
    }
}
