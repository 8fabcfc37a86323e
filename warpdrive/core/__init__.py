"""The engine: data store, the CPU/CUDA seam, phases, the env base class, sampling and checking."""
