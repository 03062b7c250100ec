"""Small helpers every layer uses: errors naming their key, tensor image operations, progress bars, the
config resolvers and the safe reading of weight files."""
