# One job per network: the low-pass, each conditional per (level, receptive field),
# each flat per receptive field. Or, with networks.source: published, the authors'
# networks imported into the same files, so everything downstream runs unchanged.

TRAIN_RESOURCES = dict(
    mem_mb=lambda wc: heavy("mem_mb"),
    runtime=lambda wc: heavy("runtime"),
)
if CFG.resources.get("gpu"):
    TRAIN_RESOURCES["gpu"] = 1

if CFG.networks.source == "trained":

    rule train_lowpass:
        input:
            faces=FACES,
            wavelets=WAVELETS,
        output:
            model=f"{RUN}/models/lowpass/model.pt",
            metrics=f"{RUN}/models/lowpass/metrics.jsonl",
            curve=report(
                f"{RUN}/models/lowpass/training_curve.png",
                caption="../report/training_curve.rst",
                category="Training",
                subcategory="low-pass",
            ),
        params:
            name="lowpass",
            work=f"{RUN}/models/lowpass/work",
            settings=[config["networks"], config["train"]],
            seed=config["seed"],
        log:
            f"{RUN}/logs/train_lowpass.log",
        benchmark:
            f"{RUN}/benchmarks/train_lowpass.tsv"
        threads: lambda wc: heavy("threads")
        resources:
            **TRAIN_RESOURCES,
        script:
            "../scripts/train.py"

    rule train_conditional:
        input:
            faces=FACES,
            wavelets=WAVELETS,
        output:
            model=f"{RUN}/models/conditional_j{{level}}_rf{{rf}}/model.pt",
            metrics=f"{RUN}/models/conditional_j{{level}}_rf{{rf}}/metrics.jsonl",
            curve=report(
                f"{RUN}/models/conditional_j{{level}}_rf{{rf}}/training_curve.png",
                caption="../report/training_curve.rst",
                category="Training",
                subcategory="conditional",
            ),
        params:
            name=lambda wc: f"conditional_j{wc.level}_rf{wc.rf}",
            work=f"{RUN}/models/conditional_j{{level}}_rf{{rf}}/work",
            settings=[config["networks"], config["train"]],
            seed=config["seed"],
        wildcard_constraints:
            level=r"\d+",
            rf=r"\d+",
        log:
            f"{RUN}/logs/train_conditional_j{{level}}_rf{{rf}}.log",
        benchmark:
            f"{RUN}/benchmarks/train_conditional_j{{level}}_rf{{rf}}.tsv"
        threads: lambda wc: heavy("threads")
        resources:
            **TRAIN_RESOURCES,
        script:
            "../scripts/train.py"

    rule train_flat:
        input:
            faces=FACES,
            wavelets=WAVELETS,
        output:
            model=f"{RUN}/models/flat_rf{{rf}}/model.pt",
            metrics=f"{RUN}/models/flat_rf{{rf}}/metrics.jsonl",
            curve=report(
                f"{RUN}/models/flat_rf{{rf}}/training_curve.png",
                caption="../report/training_curve.rst",
                category="Training",
                subcategory="flat",
            ),
        params:
            name=lambda wc: f"flat_rf{wc.rf}",
            work=f"{RUN}/models/flat_rf{{rf}}/work",
            settings=[config["networks"], config["train"]],
            seed=config["seed"],
        wildcard_constraints:
            rf=r"\d+",
        log:
            f"{RUN}/logs/train_flat_rf{{rf}}.log",
        benchmark:
            f"{RUN}/benchmarks/train_flat_rf{{rf}}.tsv"
        threads: lambda wc: heavy("threads")
        resources:
            **TRAIN_RESOURCES,
        script:
            "../scripts/train.py"

else:

    localrules:
        import_published,

    rule import_published:
        output:
            model=f"{RUN}/models/{{name}}/model.pt",
        params:
            networks=config["networks"],
        log:
            f"{RUN}/logs/import_published_{{name}}.log",
        script:
            "../scripts/import_published.py"
