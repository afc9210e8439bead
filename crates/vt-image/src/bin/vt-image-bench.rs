//! `vt-image-bench [WORKDIR] [--mb N]`: end-to-end image → root disk throughput.
//!
//! Generates a deterministic tree (default 160 MB: many small, some medium, a few large files;
//! content half pseudo-random, half text-like, so gzip gets roughly 2:1), writes it as a gzip
//! and as an uncompressed one-layer OCI layout, then for each measures on a fresh store:
//! pull (copy + sha256 verify + fsync), unpack, mkfs.ext4 separately, then the end-to-end
//! `ensure_rootdisk` and a cache hit. Throughput = uncompressed file bytes / seconds.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vt_image::layout::{write_image, LayerFormat};
use vt_image::oci::RuntimeConfig;
use vt_image::rootdisk::build_ext4;
use vt_image::store::{self, BlobStore};
use vt_image::unpack::{unpack_image, UnpackOptions};
use vt_image::{ImageStore, OciLayoutSource, StoreOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn fill(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = ["lorem ", "ipsum ", "dolor ", "sit ", "amet ", "vt ", "image ", "layer\n"];
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        let r = rng.next();
        if r & 1 == 0 {
            for _ in 0..64 {
                v.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            for i in 0..64 {
                v.extend_from_slice(WORDS[((r >> (i % 60)) & 7) as usize].as_bytes());
            }
        }
    }
    v.truncate(len);
    v
}

fn generate(dir: &Path, target: u64) -> Res<(u64, u64)> {
    let mut rng = Rng(42);
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut i = 0u64;
    while bytes < target {
        let size = match i % 100 {
            0 => 4 << 20 | (rng.next() % (4 << 20)),       // 1 %: 4-8 MiB
            1..=10 => 64 << 10 | (rng.next() % (1 << 20)), // 10 %: 64 KiB-1 MiB
            _ => rng.next() % (32 << 10),                  // 89 %: up to 32 KiB
        } as usize;
        let sub = dir.join(format!("d{:02}/s{:02}", i % 37, i % 11));
        std::fs::create_dir_all(&sub)?;
        std::fs::write(sub.join(format!("f{i:06}.bin")), fill(&mut rng, size))?;
        bytes += size as u64;
        files += 1;
        i += 1;
    }
    vt_image::testing::busybox_rootfs(dir).ok();
    Ok((bytes, files))
}

/// CPU seconds used by this process and its waited-for children (mkfs.ext4).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // Fields 14-17 (utime stime cutime cstime) are at 11..15 after the ")".
    f.get(11..15).map(|v| v.iter().sum::<f64>() / 100.0).unwrap_or(0.0)
}

fn sync() {
    let _ = std::process::Command::new("sync").status();
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let mut work = PathBuf::from("/tmp/vt-image-bench");
    let mut mb = 160u64;
    while let Some(a) = args.next() {
        if a == "--mb" {
            mb = args.next().ok_or("--mb N")?.parse()?;
        } else {
            work = PathBuf::from(a);
        }
    }
    if work.exists() {
        vt_image::unpack::remove_tree(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree)?;
    let (bytes, files) = generate(&tree, mb << 20)?;
    let mbytes = bytes as f64 / 1e6;
    println!("tree: {files} files, {mbytes:.1} MB (uncompressed file content)");
    let shm = Path::new("/dev/shm");
    let shm = shm.is_dir().then(|| shm.join(format!("vt-image-bench-{}", std::process::id())));
    if let Some(s) = &shm {
        std::fs::create_dir_all(s)?;
    }
    println!();
    println!(
        "stages run one after another with `sync` before each; e2e = ensure_rootdisk on a fresh store (fsync on);"
    );
    println!("e2e cells: wall seconds (MB/s), then CPU seconds of this process + mkfs.ext4");
    println!();
    println!("| layer | blob MB | pull+verify s | unpack s | mkfs s | fsync disk s | e2e scratch=disk s (MB/s) | e2e scratch=/dev/shm s (MB/s) | cache hit ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut raw = Vec::new();
    for (name, format) in [
        ("tar+gzip(6)", LayerFormat::Gzip(6)),
        ("tar+gzip(1)", LayerFormat::Gzip(1)),
        ("tar", LayerFormat::Uncompressed),
    ] {
        let layout = work.join(format!("layout-{}", name.replace(['(', ')', '+'], "")));
        let img = write_image(&tree, &layout, RuntimeConfig::default(), format)?;
        let src = OciLayoutSource::open(&layout)?;

        // Raw costs: inflate alone, sha256 of the uncompressed stream alone.
        let blob = layout.join("blobs/sha256").join(img.layer.digest.hex());
        let t = Instant::now();
        let mut plain: Box<dyn Read> = match format {
            LayerFormat::Gzip(_) => {
                Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(std::fs::File::open(&blob)?)))
            }
            LayerFormat::Uncompressed => Box::new(std::fs::File::open(&blob)?),
        };
        let mut tar_bytes = Vec::new();
        plain.read_to_end(&mut tar_bytes)?;
        let t_inflate = t.elapsed();
        let t = Instant::now();
        let _ = vt_image::Digest::of(&tar_bytes);
        let t_sha = t.elapsed();
        drop(tar_bytes);
        raw.push(format!("{name}: read+inflate {:.2} s, sha256 of tar {:.2} s", secs(t_inflate), secs(t_sha)));

        // Stage by stage.
        let sdir = work.join("stages");
        let blobs = BlobStore::open(&sdir.join("blobs"), &sdir.join("tmp"), u64::MAX)?;
        sync();
        let t = Instant::now();
        let pulled = store::pull(&blobs, &src, &img.manifest.digest)?;
        let t_pull = t.elapsed();
        sync();
        let t = Instant::now();
        let unpacked = unpack_image(&blobs, &pulled, &sdir.join("tmp"), UnpackOptions::default())?;
        let t_unpack = t.elapsed();
        sync();
        let t = Instant::now();
        let disk = sdir.join("disk.ext4");
        build_ext4(unpacked.path(), &disk, "00000000-0000-0000-0000-000000000001", &[])?;
        let t_mkfs = t.elapsed();
        let t = Instant::now();
        std::fs::File::open(&disk)?.sync_all()?;
        let t_fsync = t.elapsed();
        drop(unpacked);
        vt_image::unpack::remove_tree(&sdir)?;

        // End to end (scratch on disk, then on /dev/shm), then a cache hit.
        let mut e2e = Vec::new();
        let mut t_hit = Duration::ZERO;
        for scratch in [None, shm.clone()] {
            let opts = StoreOptions { scratch_dir: scratch.clone(), ..Default::default() };
            let store_dir = work.join("store");
            let store = ImageStore::open(&store_dir, opts)?;
            sync();
            let (t, c) = (Instant::now(), cpu_secs());
            store.ensure_rootdisk(&src, &img.manifest.digest)?;
            let (d, c) = (t.elapsed(), cpu_secs() - c);
            e2e.push(format!("{:.2} ({:.0}) cpu {:.2}s", secs(d), mbytes / secs(d), c));
            let t = Instant::now();
            let hit = store.ensure_rootdisk(&src, &img.manifest.digest)?;
            t_hit = t.elapsed();
            assert!(!hit.built);
            store.gc(&[], Duration::ZERO)?;
            drop(store);
            vt_image::unpack::remove_tree(&store_dir)?;
            if scratch.is_none() && shm.is_none() {
                e2e.push("n/a".into());
                break;
            }
        }
        println!(
            "| {name} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.3} |",
            img.layer.size as f64 / 1e6,
            secs(t_pull),
            secs(t_unpack),
            secs(t_mkfs),
            secs(t_fsync),
            e2e[0],
            e2e[1],
            secs(t_hit) * 1e3
        );
        std::io::stdout().flush()?;
    }
    println!();
    for r in raw {
        println!("{r}");
    }
    if let Some(s) = &shm {
        vt_image::unpack::remove_tree(s)?;
    }
    vt_image::unpack::remove_tree(&work)?;
    Ok(())
}
