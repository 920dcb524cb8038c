//! Classic LeNet-5: conv 6@5x5, tanh, max-pool, conv 16@5x5, tanh, max-pool, dense 120, tanh,
//! dense 84, tanh, dense 10, on the 28x28 image zero-padded to 32x32. 61,706 parameters.

#![forbid(unsafe_code)]

use crate::blocks::{conv_net_model, ConvBlock, ConvNet, DenseBlock};
use crate::fixed::{ACT_FRAC, INPUT_FRAC};
use crate::layers::{Conv5x5, Dense};
use crate::network::{layout, LayerSpec};

/// Classic LeNet-5 (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Lenet5;

const SIDE: usize = 32;

const LAYERS: [LayerSpec; 5] = layout([
    LayerSpec::new("conv1", &[6, 1, 5, 5], 13, INPUT_FRAC),
    LayerSpec::new("conv2", &[16, 6, 5, 5], 14, ACT_FRAC),
    LayerSpec::new("fc1", &[120, 400], 14, ACT_FRAC),
    LayerSpec::new("fc2", &[84, 120], 14, ACT_FRAC),
    LayerSpec::new("fc3", &[10, 84], 14, ACT_FRAC),
]);

const NET: ConvNet<3> = ConvNet {
    side: SIDE,
    conv: [
        ConvBlock { conv: Conv5x5 { in_ch: 1, out_ch: 6, in_h: 32, in_w: 32 }, spec: &LAYERS[0] },
        ConvBlock { conv: Conv5x5 { in_ch: 6, out_ch: 16, in_h: 14, in_w: 14 }, spec: &LAYERS[1] },
    ],
    dense: [
        DenseBlock { dense: Dense { inputs: 400, outputs: 120 }, spec: &LAYERS[2], tanh: true },
        DenseBlock { dense: Dense { inputs: 120, outputs: 84 }, spec: &LAYERS[3], tanh: true },
        DenseBlock { dense: Dense { inputs: 84, outputs: 10 }, spec: &LAYERS[4], tanh: false },
    ],
};

conv_net_model!(Lenet5, "lenet5", LAYERS, NET);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Network;

    #[test]
    fn has_the_classic_parameter_count() {
        // 156 + 2,416 + 48,120 + 10,164 + 850
        assert_eq!(Lenet5::PARAMS, 61_706);
    }

    #[test]
    fn counts_its_multiply_accumulates() {
        // Forward: conv1 28*28*6*25 + conv2 10*10*16*150 + 400*120 + 120*84 + 84*10 = 416,520.
        assert_eq!(Lenet5::TRAIN_MACS, 3 * 416_520 - 117_600);
    }
}
