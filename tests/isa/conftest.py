def pytest_configure(config):
    config.addinivalue_line(
        "markers", "vmkit: runs a guest under vmkit and compares with QEMU "
        "(failures show the guest console)")
