# Sampling with the multi-scale model: unconditional synthesis, super-resolution from
# the coarsest low-pass of test images, and inpainting.


rule synthesize:
    input:
        models=list(multiscale_models().values()),
    output:
        samples=f"{RUN}/samples/synthesis.h5",
        grid=report(
            f"{RUN}/figures/samples.png",
            caption="../report/samples.rst",
            category="Sampling",
        ),
        grid_pdf=f"{RUN}/figures/samples.pdf",
        traces=report(
            f"{RUN}/figures/sampling_traces.png",
            caption="../report/sampling_traces.rst",
            category="Sampling",
        ),
        traces_pdf=f"{RUN}/figures/sampling_traces.pdf",
    params:
        names=list(multiscale_models()),
        settings=config["sample"],
        seed=config["seed"],
    log:
        f"{RUN}/logs/synthesize.log",
    benchmark:
        f"{RUN}/benchmarks/synthesize.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc: light("mem_mb"),
        runtime=lambda wc: light("runtime"),
    script:
        "../scripts/synthesize.py"


# Only where the run has flat networks: the same sampler in the pixel domain, to show
# what a local model gives without the multi-scale split (textures, not faces).
rule synthesize_flat:
    input:
        model=flat_sample_model(),
    output:
        grid=report(
            f"{RUN}/figures/samples_flat.png",
            caption="../report/samples_flat.rst",
            category="Sampling",
        ),
        grid_pdf=f"{RUN}/figures/samples_flat.pdf",
    params:
        settings=config["sample"],
        seed=config["seed"],
    log:
        f"{RUN}/logs/synthesize_flat.log",
    benchmark:
        f"{RUN}/benchmarks/synthesize_flat.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc: light("mem_mb"),
        runtime=lambda wc: light("runtime"),
    script:
        "../scripts/synthesize_flat.py"


rule super_resolve:
    input:
        faces=FACES,
        models=list(multiscale_models().values()),
    output:
        samples=f"{RUN}/samples/superres.h5",
        panel=report(
            f"{RUN}/figures/superres.png",
            caption="../report/superres.rst",
            category="Sampling",
        ),
        panel_pdf=f"{RUN}/figures/superres.pdf",
    params:
        names=list(multiscale_models()),
        settings=config["sample"],
        seed=config["seed"],
    log:
        f"{RUN}/logs/super_resolve.log",
    benchmark:
        f"{RUN}/benchmarks/super_resolve.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc: light("mem_mb"),
        runtime=lambda wc: light("runtime"),
    script:
        "../scripts/superres.py"


rule inpaint:
    input:
        faces=FACES,
        models=list(multiscale_models().values()),
    output:
        panel=report(
            f"{RUN}/figures/inpainting.png",
            caption="../report/inpainting.rst",
            category="Sampling",
        ),
        panel_pdf=f"{RUN}/figures/inpainting.pdf",
    params:
        names=list(multiscale_models()),
        settings=config["sample"],
        seed=config["seed"],
    log:
        f"{RUN}/logs/inpaint.log",
    benchmark:
        f"{RUN}/benchmarks/inpaint.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc: light("mem_mb"),
        runtime=lambda wc: light("runtime"),
    script:
        "../scripts/inpaint.py"
