pytest_plugins = [
    "recon_pipeline_tests.fixtures.postgres",
    "recon_pipeline_tests.fixtures.emulator",
]
