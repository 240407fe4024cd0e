"""Where the registered datasets' files come from: paths, SHA-256 digests and URLs.

:func:`fedsim.data.files.fetch` downloads a :class:`~fedsim.data.files.RemoteFile` once
and checks its digest; the loaders in :mod:`fedsim.data.datasets` read the files.
"""

from __future__ import annotations

from fedsim.data.files import RemoteFile

__all__ = [
    "ADULT_COLUMNS",
    "ADULT_FILES",
    "ALL_FILES",
    "BANK_FILE",
    "COMPAS_FILE",
    "FASHION_FILES",
    "RETINA_FILE",
]

ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]
UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases"
ADULT_FILES = (
    RemoteFile(
        "adult/adult.data",
        "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
        f"{UCI}/adult/adult.data",
    ),
    RemoteFile(
        "adult/adult.test",
        "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
        f"{UCI}/adult/adult.test",
    ),
)
COMPAS_FILE = RemoteFile(
    "compas/compas-scores-two-years.csv",
    "c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d",
    "https://raw.githubusercontent.com/propublica/compas-analysis/master/"
    "compas-scores-two-years.csv",
)
BANK_FILE = RemoteFile(
    "bank_marketing/bank-full.csv",
    "d1513ec63b385506f7cfce9f2c5caa9fe99e7ba4e8c3fa264b3aaf0f849ed32d",
    "https://archive.ics.uci.edu/static/public/222/bank+marketing.zip",
    members=("bank.zip", "bank-full.csv"),
)
RETINA_FILE = RemoteFile(
    "medmnist/retinamnist.npz",
    "254915f5f0a2074665c4676356824cf4ef4a3bcab233894b4bafcaf48962bd69",
    "https://zenodo.org/records/10519652/files/retinamnist.npz?download=1",
)
FMNIST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
FASHION_FILES = {
    name: RemoteFile(f"fashion_mnist/{name}", digest, f"{FMNIST}/{name}", payload_gzip=True)
    for name, digest in {
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    }.items()
}
ALL_FILES = {
    "adult": ADULT_FILES,
    "compas": (COMPAS_FILE,),
    "bank": (BANK_FILE,),
    "retinamnist": (RETINA_FILE,),
    "fashion-mnist": tuple(FASHION_FILES.values()),
}
