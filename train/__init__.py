"""Training, evaluation and export scripts for the vqvae library.

python -m train --preset mnist --data-dir ../shared/data --out runs/mnist
python -m train.evaluate runs/mnist --dataset mnist --data-dir ../shared/data
python -m train.export runs/mnist --name mnist
"""
