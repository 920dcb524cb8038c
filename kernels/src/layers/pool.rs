//! 2x2 max-pooling with stride 2.
//!
//! The forward pass remembers, for every output, the input index of its maximum (the first one in
//! row-major window order when several are equal); the backward pass routes each output gradient to
//! that index and zero elsewhere.

#![forbid(unsafe_code)]

/// Shape of a 2x2 max-pool layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2 {
    /// Channels.
    pub ch: usize,
    /// Input height (even).
    pub in_h: usize,
    /// Input width (even).
    pub in_w: usize,
}

impl MaxPool2 {
    /// Input tensor length.
    pub const fn input_len(&self) -> usize {
        self.ch * self.in_h * self.in_w
    }
    /// Output tensor length.
    pub const fn output_len(&self) -> usize {
        self.ch * (self.in_h / 2) * (self.in_w / 2)
    }

    /// `out[c][y][x]` = max of the 2x2 window; `argmax` gets the winning input index.
    pub fn forward<T: Copy + PartialOrd>(&self, input: &[T], out: &mut [T], argmax: &mut [u32]) {
        assert_eq!(input.len(), self.input_len());
        assert_eq!(out.len(), self.output_len());
        assert_eq!(argmax.len(), self.output_len());
        let (oh, ow) = (self.in_h / 2, self.in_w / 2);
        let mut o = 0;
        for c in 0..self.ch {
            for y in 0..oh {
                for x in 0..ow {
                    let top = (c * self.in_h + 2 * y) * self.in_w + 2 * x;
                    let mut best = top;
                    for i in [top + 1, top + self.in_w, top + self.in_w + 1] {
                        if input[i] > input[best] {
                            best = i;
                        }
                    }
                    out[o] = input[best];
                    argmax[o] = best as u32;
                    o += 1;
                }
            }
        }
    }

    /// Routes `grad_out` to the remembered maxima of `grad_in`; the rest of `grad_in` becomes zero.
    pub fn backward<T: Copy + Default>(&self, grad_out: &[T], argmax: &[u32], grad_in: &mut [T]) {
        assert_eq!(grad_out.len(), self.output_len());
        assert_eq!(argmax.len(), self.output_len());
        assert_eq!(grad_in.len(), self.input_len());
        grad_in.fill(T::default());
        for (&g, &i) in grad_out.iter().zip(argmax) {
            grad_in[i as usize] = g;
        }
    }
}
