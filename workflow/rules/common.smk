# Shared helpers of the rule files: model paths and per-rule resources.

from msprior.pipeline import model_names

FACES = f"{RUN}/data/faces.h5"
WAVELETS = f"{RUN}/data/wavelets.h5"


# Light jobs run on the submitting machine; only the training jobs go to a cluster.
localrules:
    all,
    prepare_faces,
    wavelet_coefficients,
    evaluate_denoising,
    reference_comparison,
    synthesize,
    synthesize_flat,
    super_resolve,
    inpaint,


def model_path(name):
    return f"{RUN}/models/{name}/model.pt"


def all_models():
    """name -> model file, for every network of the run."""
    return {name: model_path(name) for name in model_names(CFG)}


def multiscale_models():
    """The networks that sampling needs: low-pass + conditionals of sample.rf."""
    names = ["lowpass"] + [
        f"conditional_j{j}_rf{CFG.sample_rf}" for j in range(1, CFG.wavelet.levels + 1)
    ]
    return {name: model_path(name) for name in names}


def flat_sample_model():
    """The flat network sampled for comparison: the smallest receptive field."""
    return model_path(f"flat_rf{min(CFG.networks.receptive_fields)}")


def flat_samples():
    """The flat samples' figure, where the run has flat networks."""
    if not CFG.networks.flat:
        return []
    return [f"{RUN}/figures/samples_flat.png", f"{RUN}/figures/samples_flat.pdf"]


def training_curves():
    if CFG.networks.source != "trained":
        return []
    return [f"{RUN}/models/{name}/training_curve.png" for name in model_names(CFG)]


def light(key):
    return CFG.resources.get("light", {}).get(key, {"threads": 1, "mem_mb": 2000,
                                                    "runtime": 30}[key])


def heavy(key):
    return CFG.resources.get("train", {}).get(key, {"threads": 1, "mem_mb": 4000,
                                                    "runtime": 60}[key])


def reference_tables():
    if CFG.networks.source != "published":
        return []
    return [f"{RUN}/tables/reference_comparison.csv"]
