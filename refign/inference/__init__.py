"""Running a trained model on a user's files and on datasets: the picture at the trained scale, images,
folders and videos, and the benchmark servers' export."""
