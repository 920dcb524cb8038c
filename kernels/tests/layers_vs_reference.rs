//! Each fixed-point layer against the f32 reference on random inputs.
//!
//! Inputs are drawn as reals, quantised to the fixed-point formats, and the f32 layer runs on exactly
//! the quantised values, so the differences measured are the fixed-point kernels' own rounding. The
//! tolerances are stated per layer, in real units, with the reason.

use kernels::arith::{Arith, Fixed, Float};
use kernels::fixed::{ACT_FRAC, DELTA_FRAC, MASTER_FRAC};
use kernels::layers::{
    relu_backward, relu_forward, softmax_cross_entropy, tanh_backward, tanh_forward, Conv5x5, Dense, MaxPool2,
};
use kernels::rng::Rng;

/// One Q0.15 step.
const LSB15: f64 = 1.0 / 32768.0;

/// `n` reals uniform in [-range, range), quantised to `frac` bits, as (fixed, f32) pairs.
fn random_vals(rng: &mut Rng, n: usize, range: f64, frac: u32) -> (Vec<i16>, Vec<f32>) {
    let fixed: Vec<i16> =
        (0..n).map(|_| Fixed::val_from_f64((rng.uniform_open() * 2.0 - 1.0) * range, frac)).collect();
    let float = fixed.iter().map(|&v| Fixed::val_to_f64(v, frac) as f32).collect();
    (fixed, float)
}

fn random_params(rng: &mut Rng, n: usize, range: f64) -> (Vec<i32>, Vec<f32>) {
    let fixed: Vec<i32> =
        (0..n).map(|_| Fixed::param_from_f64((rng.uniform_open() * 2.0 - 1.0) * range)).collect();
    let float = fixed.iter().map(|&p| Fixed::param_to_f64(p) as f32).collect();
    (fixed, float)
}

fn max_diff_acc(fixed: &[i64], frac: u32, float: &[f32]) -> f64 {
    fixed.iter().zip(float).map(|(&a, &b)| (Fixed::acc_to_f64(a, frac) - b as f64).abs()).fold(0.0, f64::max)
}

fn max_diff_val(fixed: &[i16], frac: u32, float: &[f32]) -> f64 {
    fixed.iter().zip(float).map(|(&a, &b)| (Fixed::val_to_f64(a, frac) - b as f64).abs()).fold(0.0, f64::max)
}

const CONV: Conv5x5 = Conv5x5 { in_ch: 3, out_ch: 4, in_h: 10, in_w: 9 };

#[test]
fn conv_forward_matches() {
    // The fixed accumulator is exact, so the only difference is f32 rounding in the reference's sums
    // of 75 products: below 1e-5.
    let mut rng = Rng::new(1);
    let (x, xf) = random_vals(&mut rng, CONV.input_len(), 1.0, ACT_FRAC);
    let (w, wf) = random_vals(&mut rng, CONV.weight_len(), 0.5, 15);
    let (b, bf) = random_params(&mut rng, CONV.out_ch, 0.5);
    let mut patches = vec![0i16; CONV.patches_len()];
    let mut patches_f = vec![0f32; CONV.patches_len()];
    CONV.im2col(&x, &mut patches);
    CONV.im2col(&xf, &mut patches_f);
    let mut out = vec![0i64; CONV.output_len()];
    let mut out_f = vec![0f32; CONV.output_len()];
    CONV.forward::<Fixed>(&patches, &w, &b, 30, &mut out);
    CONV.forward::<Float>(&patches_f, &wf, &bf, 30, &mut out_f);
    let diff = max_diff_acc(&out, 30, &out_f);
    assert!(diff < 1e-5, "conv forward differs by {diff:e}");
    // And against a direct (not im2col) convolution in f64, to check the indexing itself.
    for co in 0..CONV.out_ch {
        for oy in 0..CONV.out_h() {
            for ox in 0..CONV.out_w() {
                let mut s = bf[co] as f64;
                for ci in 0..CONV.in_ch {
                    for ky in 0..5 {
                        for kx in 0..5 {
                            s += xf[(ci * CONV.in_h + oy + ky) * CONV.in_w + ox + kx] as f64
                                * wf[((co * CONV.in_ch + ci) * 5 + ky) * 5 + kx] as f64;
                        }
                    }
                }
                let got = Fixed::acc_to_f64(out[(co * CONV.out_h() + oy) * CONV.out_w() + ox], 30);
                assert!((got - s).abs() < 1e-9, "direct convolution differs at {co},{oy},{ox}");
            }
        }
    }
}

#[test]
fn conv_backward_matches() {
    // Gradients are exact integer sums in the fixed version: the differences are f32 rounding only.
    let mut rng = Rng::new(2);
    let (x, xf) = random_vals(&mut rng, CONV.input_len(), 1.0, ACT_FRAC);
    let (w, wf) = random_vals(&mut rng, CONV.weight_len(), 0.5, 15);
    let (d, df) = random_vals(&mut rng, CONV.output_len(), 0.5, DELTA_FRAC);
    let mut patches = vec![0i16; CONV.patches_len()];
    let mut patches_f = vec![0f32; CONV.patches_len()];
    CONV.im2col(&x, &mut patches);
    CONV.im2col(&xf, &mut patches_f);

    let mut gw = vec![0i64; CONV.weight_len()];
    let mut gb = vec![0i64; CONV.out_ch];
    let mut gw_f = vec![0f32; CONV.weight_len()];
    let mut gb_f = vec![0f32; CONV.out_ch];
    CONV.backward_params::<Fixed>(&patches, &d, &mut gw, &mut gb);
    CONV.backward_params::<Float>(&patches_f, &df, &mut gw_f, &mut gb_f);
    assert!(max_diff_acc(&gw, 30, &gw_f) < 1e-5);
    assert!(max_diff_acc(&gb, 15, &gb_f) < 1e-5);

    let mut scratch = vec![0i64; CONV.patch_len()];
    let mut scratch_f = vec![0f32; CONV.patch_len()];
    let mut gx = vec![0i64; CONV.input_len()];
    let mut gx_f = vec![0f32; CONV.input_len()];
    CONV.backward_input::<Fixed>(&d, &w, &mut scratch, &mut gx);
    CONV.backward_input::<Float>(&df, &wf, &mut scratch_f, &mut gx_f);
    assert!(max_diff_acc(&gx, 30, &gx_f) < 1e-5);

    // The input gradient is the adjoint of the forward pass: <conv(x), d> == <x, grad_in(d)>.
    let mut out = vec![0f32; CONV.output_len()];
    CONV.forward::<Float>(&patches_f, &wf, &[0.0; CONV.out_ch], 0, &mut out);
    let lhs: f64 = out.iter().zip(&df).map(|(&a, &b)| a as f64 * b as f64).sum();
    let rhs: f64 = xf.iter().zip(&gx).map(|(&a, &g)| a as f64 * Fixed::acc_to_f64(g, 30)).sum();
    assert!((lhs - rhs).abs() < 1e-4, "adjoint check {lhs} vs {rhs}");
}

#[test]
fn dense_matches() {
    let layer = Dense { inputs: 37, outputs: 11 };
    let mut rng = Rng::new(3);
    let (x, xf) = random_vals(&mut rng, layer.inputs, 1.0, ACT_FRAC);
    let (w, wf) = random_vals(&mut rng, layer.weight_len(), 0.5, 15);
    let (b, bf) = random_params(&mut rng, layer.outputs, 0.5);
    let (d, df) = random_vals(&mut rng, layer.outputs, 0.5, DELTA_FRAC);
    let mut out = vec![0i64; layer.outputs];
    let mut out_f = vec![0f32; layer.outputs];
    layer.forward::<Fixed>(&x, &w, &b, 30, &mut out);
    layer.forward::<Float>(&xf, &wf, &bf, 30, &mut out_f);
    assert!(max_diff_acc(&out, 30, &out_f) < 1e-5);

    let (mut gw, mut gb) = (vec![0i64; layer.weight_len()], vec![0i64; layer.outputs]);
    let (mut gw_f, mut gb_f) = (vec![0f32; layer.weight_len()], vec![0f32; layer.outputs]);
    layer.backward_params::<Fixed>(&x, &d, &mut gw, &mut gb);
    layer.backward_params::<Float>(&xf, &df, &mut gw_f, &mut gb_f);
    assert!(max_diff_acc(&gw, 30, &gw_f) < 1e-6);
    assert!(max_diff_acc(&gb, 15, &gb_f) < 1e-6);

    let (mut gx, mut gx_f) = (vec![0i64; layer.inputs], vec![0f32; layer.inputs]);
    layer.backward_input::<Fixed>(&d, &w, &mut gx);
    layer.backward_input::<Float>(&df, &wf, &mut gx_f);
    assert!(max_diff_acc(&gx, 30, &gx_f) < 1e-5);
}

#[test]
fn max_pool_matches_exactly() {
    let pool = MaxPool2 { ch: 3, in_h: 6, in_w: 8 };
    let mut rng = Rng::new(4);
    let (x, xf) = random_vals(&mut rng, pool.input_len(), 1.0, ACT_FRAC);
    let (mut out, mut arg) = (vec![0i16; pool.output_len()], vec![0u32; pool.output_len()]);
    let (mut out_f, mut arg_f) = (vec![0f32; pool.output_len()], vec![0u32; pool.output_len()]);
    pool.forward(&x, &mut out, &mut arg);
    pool.forward(&xf, &mut out_f, &mut arg_f);
    assert_eq!(arg, arg_f);
    assert_eq!(max_diff_val(&out, ACT_FRAC, &out_f), 0.0);
    // Every output is the max of its window.
    for (o, &i) in out.iter().zip(&arg) {
        assert_eq!(*o, x[i as usize]);
    }
    let grad: Vec<i64> = (0..pool.output_len() as i64).map(|i| i + 1).collect();
    let mut back = vec![7i64; pool.input_len()];
    pool.backward(&grad, &arg, &mut back);
    assert_eq!(back.iter().sum::<i64>(), grad.iter().sum::<i64>());
    assert_eq!(back.iter().filter(|&&v| v != 0).count(), pool.output_len());
    // Ties go to the first element of the window.
    let (mut o, mut a) = ([0i16; 1], [0u32; 1]);
    MaxPool2 { ch: 1, in_h: 2, in_w: 2 }.forward(&[5i16, 5, 5, 5], &mut o, &mut a);
    assert_eq!(a, [0]);
}

#[test]
fn tanh_matches() {
    // Forward: Q3.12 input rounding (<= 2^-13, times a slope <= 1) plus the table's 1.52 LSB: < 2e-4.
    // Backward: one rounding of the delta (0.5 LSB) plus the slope's rounding and y's error: < 1e-4.
    let mut rng = Rng::new(5);
    let n = 4000;
    let pre: Vec<i64> =
        (0..n).map(|_| kernels::fixed::from_f64((rng.uniform_open() - 0.5) * 12.0, 30)).collect();
    let pre_f: Vec<f32> = pre.iter().map(|&a| Fixed::acc_to_f64(a, 30) as f32).collect();
    let (mut y, mut y_f) = (vec![0i16; n], vec![0f32; n]);
    tanh_forward::<Fixed>(&pre, 30, &mut y);
    tanh_forward::<Float>(&pre_f, 30, &mut y_f);
    let forward = max_diff_val(&y, ACT_FRAC, &y_f);
    assert!(forward < 2e-4, "tanh forward differs by {forward:e}");

    let grad: Vec<i64> = (0..n).map(|_| kernels::fixed::from_f64(rng.uniform_open() - 0.5, 30)).collect();
    let grad_f: Vec<f32> = grad.iter().map(|&g| Fixed::acc_to_f64(g, 30) as f32).collect();
    let (mut d, mut d_f) = (vec![0i16; n], vec![0f32; n]);
    tanh_backward::<Fixed>(&grad, 30, &y, &mut d);
    // The reference's slope uses its own y; the difference includes the forward error.
    tanh_backward::<Float>(&grad_f, 30, &y_f, &mut d_f);
    let backward = max_diff_val(&d, DELTA_FRAC, &d_f);
    assert!(backward < 1e-4, "tanh backward differs by {backward:e}");
}

#[test]
fn relu_matches() {
    // Rounding to Q0.15 once each way: within half an LSB.
    let mut rng = Rng::new(6);
    let n = 1000;
    let pre: Vec<i64> = (0..n).map(|_| kernels::fixed::from_f64(rng.uniform_open() - 0.5, 30)).collect();
    let pre_f: Vec<f32> = pre.iter().map(|&a| Fixed::acc_to_f64(a, 30) as f32).collect();
    let (mut y, mut y_f) = (vec![0i16; n], vec![0f32; n]);
    relu_forward::<Fixed>(&pre, 30, ACT_FRAC, &mut y);
    relu_forward::<Float>(&pre_f, 30, ACT_FRAC, &mut y_f);
    assert!(max_diff_val(&y, ACT_FRAC, &y_f) <= 0.5 * LSB15 + 1e-9);
    assert!(y.iter().all(|&v| v >= 0));
    let (mut d, mut d_f) = (vec![0i16; n], vec![0f32; n]);
    relu_backward::<Fixed>(&pre, 30, &y, &mut d);
    relu_backward::<Float>(&pre_f, 30, &y_f, &mut d_f);
    assert!(max_diff_val(&d, DELTA_FRAC, &d_f) <= 0.5 * LSB15 + 1e-9);
    assert!(d.iter().zip(&y).all(|(&d, &y)| y > 0 || d == 0));
}

#[test]
fn softmax_cross_entropy_matches() {
    // The loss uses the same f64 code on the exact logits; deltas differ by the final rounding only.
    let mut rng = Rng::new(7);
    for label in 0..10u8 {
        let logits: Vec<i64> =
            (0..10).map(|_| kernels::fixed::from_f64((rng.uniform_open() - 0.5) * 10.0, 30)).collect();
        let logits_f: Vec<f32> = logits.iter().map(|&a| Fixed::acc_to_f64(a, 30) as f32).collect();
        let (mut d, mut d_f) = ([0i16; 10], [0f32; 10]);
        let a = softmax_cross_entropy::<Fixed>(&logits, 30, label as usize, &mut d);
        let b = softmax_cross_entropy::<Float>(&logits_f, 30, label as usize, &mut d_f);
        assert_eq!(a.predicted, b.predicted);
        assert!((a.loss - b.loss).abs() < 1e-5);
        assert!(max_diff_val(&d, DELTA_FRAC, &d_f) <= 0.5 * LSB15 + 1e-7);
        // p - onehot sums to zero, up to one rounding per class.
        assert!(d.iter().map(|&v| v as i64).sum::<i64>().abs() <= 10);
    }
}

#[test]
fn sgd_matches() {
    // Rounded once to Q7.24: within 1 LSB (6e-8) for the momentum, 2 for the weights, plus f32 error.
    let mut rng = Rng::new(8);
    let n = 500;
    let (mut w, mut w_f) = random_params(&mut rng, n, 1.0);
    let (mut m, mut m_f) = random_params(&mut rng, n, 0.01);
    let grads: Vec<i64> =
        (0..n).map(|_| kernels::fixed::from_f64((rng.uniform_open() - 0.5) * 40.0, 30)).collect();
    let grads_f: Vec<f32> = grads.iter().map(|&g| Fixed::acc_to_f64(g, 30) as f32).collect();
    let config = kernels::SgdConfig::default();
    Fixed::sgd_step(&Fixed::sgd_constants(&config), &mut w, &mut m, &grads, 30, 64, true);
    Float::sgd_step(&Float::sgd_constants(&config), &mut w_f, &mut m_f, &grads_f, 30, 64, true);
    let lsb = 1.0 / (1u64 << MASTER_FRAC) as f64;
    for i in 0..n {
        assert!((Fixed::param_to_f64(m[i]) - m_f[i] as f64).abs() < 2.0 * lsb);
        assert!((Fixed::param_to_f64(w[i]) - w_f[i] as f64).abs() < 3.0 * lsb + 1e-7);
    }
}
