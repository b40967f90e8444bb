from setuptools import find_packages, setup

setup(
    name="ccserver",
    version="0.11.0.dev0",
    description="CC-Server (Curious Containers) as one Twisted daemon",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # twisted/plugins has no __init__.py on purpose: the drop-in lands in Twisted's own
    # twisted/plugins directory of site-packages, where `twistd` finds it.
    packages=find_packages(include=["ccserver", "ccserver.*"]) + ["twisted.plugins"],
    # the dashboard (ccserver/web/ui) is served from the installed package
    package_data={
        "ccserver": ["py.typed", "web/ui/*.html", "web/ui/*.js", "web/ui/*.css", "web/ui/*.svg", "web/ui/pages/*.js"]
    },
    install_requires=[
        "Twisted[tls]>=24.3",
        "klein>=24.8",
        "txmongo>=24.0",
        "pymongo>=4.6,<4.19",
        "treq>=24.9",
        "jsonschema>=4.20",
        "fastjsonschema>=2.19",
        "docker>=7.1",
        "pyOpenSSL>=24.0",
        "cryptography>=42",  # reading the PEM files of Kubernetes clusters (ccserver.kubernetes.credentials)
        "service-identity>=24.1",
        "mongomock>=4.3",
        "idna>=3.6",
        "boto3>=1.34",  # TES s3:// inputs and outputs (ccserver.tes.transfer_s3)
        "requests>=2.31",  # TES http(s):// inputs and outputs, on the staging threads
        "prometheus_client>=0.20",
        # Kubernetes clusters as nodes (ccserver.kubernetes): the typed models and the
        # kubeconfig loader; the API itself is spoken through treq (docs/kubernetes.rst)
        "lightkube>=0.17",
        "lightkube-models>=1.37,<1.38",
        "PyYAML>=6.0",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2.3",
            "trustme>=1.1",
            "hypothesis>=6.100",
            "requests>=2.31",  # tests/security: what CC-Container-Worker 0.10 sends
            "packaging>=23",  # tests/test_packaging.py: reads setup.py and the lock files
            "pyftpdlib>=2.0",  # tests/tes/staging: a real FTP server
            "moto[server]>=5.0",  # tests/tes/staging: a real S3 server (ThreadedMotoServer)
        ],
        "lint": ["ruff>=0.6", "mypy>=1.11", "mypy-zope>=1.0", "types-docker>=7.1", "types-jsonschema>=4.20"],
        "docs": ["sphinx>=7"],
    },
    entry_points={"console_scripts": ["ccserver-admin = ccserver.admin:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering",
    ],
)
