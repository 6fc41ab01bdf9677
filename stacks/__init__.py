"""The dcc CDK app: one construct per unit (network, state, storage, api, workers, scaler), wired by DccStack."""
