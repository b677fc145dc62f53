"""Multi-scale local conditional probability models of images.

A reproduction of Kadkhodaie, Guth, Mallat and Simoncelli, "Learning multi-scale local
conditional probability models of images" (ICLR 2023): an orthonormal wavelet pyramid,
one global denoiser for the coarsest low-pass, one small conditional denoiser per finer
scale, and a coarse-to-fine stochastic sampler driven by their residuals.
"""

__version__ = "0.1.0"
