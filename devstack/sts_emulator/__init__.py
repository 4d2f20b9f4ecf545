"""An AWS STS emulator that enforces MFA like AWS; boto3 and aws-sdk-go v1 talk to it unchanged.

Run it with ``python -m devstack.sts_emulator --host 127.0.0.1 --port 18790``; drive its admin API
with :class:`devstack.sts_emulator.admin.EmulatorAdmin`.
"""
