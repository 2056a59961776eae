import glob

from setuptools import find_packages, setup

setup(
    name="suprem_nn",
    version="0.1.0",
    description="Self-configuring 3D CT segmentation that starts every model from the SuPreM pretrained backbones",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["suprem_nn", "suprem_nn.*"]),
    # The backbone presets live in the repository's plans/ folder; regular installs get a copy here.
    data_files=[("share/suprem_nn/plans", sorted(glob.glob("plans/*.json")))],
    python_requires=">=3.9",
    install_requires=[
        # A range that the local CPU build 2.13.0 satisfies, so a venv that installed it first pulls nothing more.
        "torch>=2.5,<2.15",
        "numpy>=1.24",
        "scipy>=1.10",
        "SimpleITK>=2.2",
        "nibabel>=5.0",
        "scikit-image>=0.21",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        # Building blocks of SegResNet and Swin UNETR (Apache-2.0); the 0.9 patch-merging order is ours. 1.5 is the
        # oldest the network tests pass on: 1.3 and 1.4 cannot build our Swin UNETR (their img_size is required).
        "monai>=1.5",
        # Connected components for largest-component post-processing, 26-connectivity, much faster than scipy.
        "connected-components-3d>=3.12",
        # progress.png and prediction previews.
        "matplotlib>=3.6",
        "tqdm>=4.60",
        # The default CPU engine of suprem_predict (--engine openvino): 1.4-2.1x faster windows at float32-equal
        # labels (documentation/prediction.md, Engines). Most users predict on a CPU, so it is part of the plain
        # install (~180 MB, needs only numpy); without it prediction falls back to torch and says so.
        "openvino>=2024",
    ],
    extras_require={
        # onnx and onnxruntime too: the ONNX export tests run the exported file (CI installs this extra).
        "test": ["pytest>=7", "onnx>=1.16", "onnxruntime>=1.18"],
        # suprem_export_onnx: torch's TorchScript exporter needs the onnx package (and nothing heavier, unlike the
        # torch.export-based exporter's onnxscript); onnxruntime checks the written file against torch.
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],
    },
    entry_points={
        "console_scripts": [
            "suprem_plan_and_preprocess=suprem_nn.cli.plan_and_preprocess:main",
            "suprem_train=suprem_nn.cli.train:main",
            "suprem_predict=suprem_nn.cli.predict:main",
            "suprem_evaluate=suprem_nn.cli.evaluate:main",
            "suprem_find_best_configuration=suprem_nn.cli.find_best_configuration:main",
            "suprem_ensemble=suprem_nn.cli.ensemble:main",
            "suprem_apply_postprocessing=suprem_nn.cli.apply_postprocessing:main",
            "suprem_demo=suprem_nn.cli.demo:main",
            "suprem_export_backbone=suprem_nn.cli.export_backbone:main",
            "suprem_download_weights=suprem_nn.cli.download_weights:main",
            "suprem_export_onnx=suprem_nn.cli.export_onnx:main",
        ],
    },
)
