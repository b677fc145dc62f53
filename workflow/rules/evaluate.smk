# Denoising over the paper's noise grid: table (CSV, Markdown, LaTeX) and figures.


rule evaluate_denoising:
    input:
        faces=FACES,
        models=list(all_models().values()),
    output:
        csv=report(
            f"{RUN}/tables/denoising.csv",
            caption="../report/denoising_table.rst",
            category="Denoising",
        ),
        md=f"{RUN}/tables/denoising.md",
        tex=f"{RUN}/tables/denoising.tex",
        curves=report(
            f"{RUN}/figures/denoising_curves.png",
            caption="../report/denoising_curves.rst",
            category="Denoising",
        ),
        curves_pdf=f"{RUN}/figures/denoising_curves.pdf",
        examples=report(
            f"{RUN}/figures/denoising_examples.png",
            caption="../report/denoising_examples.rst",
            category="Denoising",
        ),
        examples_pdf=f"{RUN}/figures/denoising_examples.pdf",
    params:
        names=list(all_models()),
        settings=config["evaluate"],
        seed=config["seed"],
    log:
        f"{RUN}/logs/evaluate_denoising.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate_denoising.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc: light("mem_mb"),
        runtime=lambda wc: light("runtime"),
    script:
        "../scripts/evaluate.py"


rule reference_comparison:
    input:
        faces=FACES,
        models=list(all_models().values()),
    output:
        csv=report(
            f"{RUN}/tables/reference_comparison.csv",
            caption="../report/reference_comparison.rst",
            category="Published networks",
        ),
        md=f"{RUN}/tables/reference_comparison.md",
    params:
        names=list(all_models()),
        settings=config["evaluate"],
        seed=config["seed"],
    log:
        f"{RUN}/logs/reference_comparison.log",
    benchmark:
        f"{RUN}/benchmarks/reference_comparison.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc: light("mem_mb"),
        runtime=lambda wc: light("runtime"),
    script:
        "../scripts/reference_comparison.py"
