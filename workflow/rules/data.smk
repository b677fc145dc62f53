# Faces from the configured source -> faces.h5 -> wavelet coefficients (wavelets.h5).


def face_inputs(wildcards):
    """Local CelebA files as inputs, so that a changed zip reruns preprocessing."""
    d = CFG.data
    if d.source == "celeba" and not d.download:
        return [p for p in (d.celeba_zip, d.celeba_partition) if p]
    return []


rule prepare_faces:
    input:
        face_inputs,
    output:
        ensure(FACES, non_empty=True),
    params:
        data=config["data"],  # a changed data section reruns this rule
        seed=config["seed"],  # the split of the embedded and folder faces
    log:
        f"{RUN}/logs/prepare_faces.log",
    benchmark:
        f"{RUN}/benchmarks/prepare_faces.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc: light("mem_mb"),
        runtime=lambda wc: light("runtime"),
    script:
        "../scripts/prepare_faces.py"


rule wavelet_coefficients:
    input:
        FACES,
    output:
        ensure(WAVELETS, non_empty=True),
    params:
        wavelet=config["wavelet"],
    log:
        f"{RUN}/logs/wavelet_coefficients.log",
    benchmark:
        f"{RUN}/benchmarks/wavelet_coefficients.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc: light("mem_mb"),
        runtime=lambda wc: light("runtime"),
    script:
        "../scripts/wavelet_coefficients.py"
