//! Whole-model training at every vector level this CPU supports, forced one after another: the same
//! gradient integers as the scalar level, and as the per-sample definition. One test in its own
//! binary, so that no other test changes the level meanwhile.

use kernels::arith::Fixed;
use kernels::heap::{batch_rows, HeapCore, HeapModel};
use kernels::rng::Rng;
use kernels::simd::level::{self, Level};
use kernels::train::{batch_gradient, Sequential};
use kernels::{Lenet5, MxLenet, Network, IMAGE_PIXELS};

fn samples(n: usize) -> Vec<(Vec<u8>, u8)> {
    let mut rng = Rng::new(71);
    (0..n)
        .map(|_| {
            let image =
                (0..IMAGE_PIXELS).map(|_| if rng.below(4) == 0 { rng.below(256) as u8 } else { 0 }).collect();
            (image, rng.below(10) as u8)
        })
        .collect()
}

fn gradient<N: Network>(level: Level, data: &[(Vec<u8>, u8)]) -> Vec<i64> {
    level::force(level).expect("a supported level");
    let model = HeapModel::<Fixed>::init::<N>(5);
    let mut core = HeapCore::<Fixed>::new::<N>();
    let batch: Vec<u32> = (0..data.len() as u32).collect();
    let sample = |i: u32| (data[i as usize].0.as_slice(), data[i as usize].1);
    let mut work = [core.work()];
    let mut rows = batch_rows::<N, Fixed>();
    batch_gradient::<N, Fixed, _>(&Sequential, model.weights(), &batch, &sample, &mut work, &mut rows);
    work[0].grads.to_vec()
}

fn per_sample<N: Network>(data: &[(Vec<u8>, u8)]) -> Vec<i64> {
    let model = HeapModel::<Fixed>::init::<N>(5);
    let mut core = HeapCore::<Fixed>::new::<N>();
    let mut grads = vec![0i64; N::PARAMS];
    for (image, label) in data {
        let (scratch, _) = core.split();
        N::train_sample::<Fixed>(model.weights(), image, *label, scratch, &mut grads);
    }
    grads
}

#[test]
fn every_level_trains_the_same_integers() {
    let data = samples(20);
    let levels: Vec<Level> = Level::ALL.into_iter().filter(|&l| level::supported(l)).collect();
    println!("levels: {levels:?} (detected {:?})", level::detected());
    assert!(levels.contains(&Level::Scalar) && levels.len() >= 2, "a vector level besides the scalar one");
    let (mx, l5) = (per_sample::<MxLenet>(&data), per_sample::<Lenet5>(&data));
    for &l in &levels {
        assert!(gradient::<MxLenet>(l, &data) == mx, "MxLenet at {l:?}");
        assert!(gradient::<Lenet5>(l, &data) == l5, "LeNet-5 at {l:?}");
    }
    assert_eq!(level::force(Level::Neon).is_ok(), cfg!(target_arch = "aarch64"));
}

#[test]
fn level_names_round_trip() {
    for l in Level::ALL {
        assert_eq!(Level::parse(l.name()), Some(l));
    }
    assert_eq!(Level::parse(" AVX2 "), Some(Level::Avx2));
    assert_eq!(Level::parse("mmx"), None);
}
