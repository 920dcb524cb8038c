//! MXNet's LeNet from the paper's example: conv 20@5x5, tanh, max-pool, conv 50@5x5, tanh, max-pool,
//! dense 500, tanh, dense 10. Input 28x28; 431,080 parameters.

#![forbid(unsafe_code)]

use crate::blocks::{conv_net_model, ConvBlock, ConvNet, DenseBlock};
use crate::fixed::{ACT_FRAC, INPUT_FRAC};
use crate::layers::{Conv5x5, Dense};
use crate::network::{layout, LayerSpec};

/// The paper's network (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct MxLenet;

const SIDE: usize = 28;

const LAYERS: [LayerSpec; 4] = layout([
    LayerSpec::new("conv1", &[20, 1, 5, 5], 13, INPUT_FRAC),
    LayerSpec::new("conv2", &[50, 20, 5, 5], 15, ACT_FRAC),
    LayerSpec::new("fc1", &[500, 800], 15, ACT_FRAC),
    LayerSpec::new("fc2", &[10, 500], 15, ACT_FRAC),
]);

const NET: ConvNet<2> = ConvNet {
    side: SIDE,
    conv: [
        ConvBlock { conv: Conv5x5 { in_ch: 1, out_ch: 20, in_h: 28, in_w: 28 }, spec: &LAYERS[0] },
        ConvBlock { conv: Conv5x5 { in_ch: 20, out_ch: 50, in_h: 12, in_w: 12 }, spec: &LAYERS[1] },
    ],
    dense: [
        DenseBlock { dense: Dense { inputs: 800, outputs: 500 }, spec: &LAYERS[2], tanh: true },
        DenseBlock { dense: Dense { inputs: 500, outputs: 10 }, spec: &LAYERS[3], tanh: false },
    ],
};

conv_net_model!(MxLenet, "mxlenet", LAYERS, NET);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Network;

    #[test]
    fn has_the_papers_parameter_count() {
        assert_eq!(MxLenet::PARAMS, 431_080);
    }

    #[test]
    fn counts_its_multiply_accumulates() {
        // Forward: conv1 24*24*20*25 + conv2 8*8*50*500 + fc 800*500 + fc 500*10 = 2,293,000; training
        // does that three times (forward, weight and input gradients) less conv1's input gradients.
        assert_eq!(MxLenet::TRAIN_MACS, 3 * 2_293_000 - 288_000);
    }
}
