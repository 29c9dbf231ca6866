"""gpushift's certificates: issue a CA and serving certificates, reload them in a running
server, and plan their rotation for the self-managed mode in the cluster."""
