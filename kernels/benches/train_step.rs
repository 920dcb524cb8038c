//! Training-step throughput, fixed point against the f32 reference, on one thread; and the static
//! memory footprint. Run with `cargo bench -p kernels`.
//!
//! Each iteration is one full step on a batch of 64 images: forward, backward and the gradient sums
//! for every sample, then the optimizer update. Criterion reports it as images per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::arith::{Arith, Fixed, Float};
use kernels::heap::{batch_rows, HeapCore, HeapModel};
use kernels::rng::Rng;
use kernels::train::{batch_gradient, Footprint, Sequential};
use kernels::{Lenet5, MxLenet, Network, SgdConfig, IMAGE_PIXELS};

const BATCH: usize = 64;

struct Step<N: Network, A: Arith> {
    model: HeapModel<A>,
    core: HeapCore<A>,
    rows: Vec<A::Val>,
    sgd: A::Sgd,
    _net: core::marker::PhantomData<N>,
}

impl<N: Network, A: Arith> Step<N, A> {
    fn new() -> Self {
        Step {
            model: HeapModel::init::<N>(1),
            core: HeapCore::new::<N>(),
            rows: batch_rows::<N, A>(),
            sgd: A::sgd_constants(&SgdConfig::default()),
            _net: core::marker::PhantomData,
        }
    }

    fn run(&mut self, batch: &[(Vec<u8>, u8)]) {
        let indices: Vec<u32> = (0..batch.len() as u32).collect();
        let sample = |i: u32| (batch[i as usize].0.as_slice(), batch[i as usize].1);
        let mut work = [self.core.work()];
        batch_gradient::<N, A, _>(
            &Sequential,
            self.model.weights(),
            &indices,
            &sample,
            &mut work,
            &mut self.rows,
        );
        self.model.update::<N>(&self.sgd, work[0].grads, batch.len() as u32);
    }
}

/// MNIST-like density: about a fifth of the pixels lit.
fn batch() -> Vec<(Vec<u8>, u8)> {
    let mut rng = Rng::new(3);
    (0..BATCH)
        .map(|_| {
            let image =
                (0..IMAGE_PIXELS).map(|_| if rng.below(5) == 0 { rng.below(256) as u8 } else { 0 }).collect();
            (image, rng.below(10) as u8)
        })
        .collect()
}

fn print_footprint<N: Network>() {
    for (name, f) in [("fixed", Footprint::of::<N, Fixed>()), ("f32", Footprint::of::<N, Float>())] {
        println!(
            "footprint {:8} {:5}: weights {:>9} B, optimizer {:>9} B, batch rows {:>7} B, per core: gradients {:>9} B, activations {:>8} B; 4 cores total {:>9} B",
            N::NAME,
            name,
            f.weights,
            f.optimizer,
            f.batch_rows,
            f.gradients_per_core,
            f.activations_per_core,
            f.total(4)
        );
    }
}

fn bench_model<N: Network>(c: &mut Criterion) {
    let data = batch();
    let mut group = c.benchmark_group(format!("train_step/{}", N::NAME));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let mut fixed = Step::<N, Fixed>::new();
    group.bench_function(BenchmarkId::from_parameter("fixed"), |b| b.iter(|| fixed.run(&data)));
    let mut float = Step::<N, Float>::new();
    group.bench_function(BenchmarkId::from_parameter("f32"), |b| b.iter(|| float.run(&data)));
    group.finish();
}

fn footprints(_: &mut Criterion) {
    print_footprint::<MxLenet>();
    print_footprint::<Lenet5>();
}

criterion_group!(benches, footprints, bench_model::<MxLenet>, bench_model::<Lenet5>);
criterion_main!(benches);
