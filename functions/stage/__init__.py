"""One handler for every stage of a partitioned BERT-family encoder.

Built with the quart-python template: faas-cli copies this folder into the
image as the package ``function``; locally the provider imports it from here.
The model code lives beside the handler so the folder is self-contained.
"""
