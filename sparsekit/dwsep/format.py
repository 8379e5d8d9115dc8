"""The depthwise-separable layer's stored form.

:class:`~sparsekit.dwsep.module.DepthwiseSeparableConv2d` keeps the dense weights of the two
convolutions it replaces, batch norms already folded in, under the names and shapes of its
state dict:

* ``dw_weight``  ``[C, 1, kh, kw]``: the depthwise kernels, one per input channel
* ``dw_bias``    ``[C]`` (optional)
* ``pw_weight``  ``[C_out, C, 1, 1]``: the pointwise (1 x 1) convolution
* ``pw_bias``    ``[C_out]`` (optional; both biases or neither)

Nothing is packed, so the state dict holds no ``format`` record (the packed formats keep one);
``FORMAT_VERSION`` numbers this layout all the same, to be bumped, with a record added, if it
ever changes.
"""

FORMAT_VERSION = 1
