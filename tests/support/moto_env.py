"""Runs a moto server (STS + IAM + S3) on 127.0.0.1:PORT for the Rust tests.

Sets up a platform IAM user and N tenants (each a bucket, a role whose trust policy
requires an external ID, and a role policy that can read only that bucket), then burns
moto's unauthenticated actions so that signatures, policies and the sts:ExternalId
condition are enforced from then on. Prints one JSON line, then serves until stdin
closes (the test process exited), and stops.
"""
import json
import os
import sys

port, tenants = int(sys.argv[1]), int(sys.argv[2])
# Setup makes 6 calls plus 4 per tenant; a small margin is burnt below. moto reads this
# setting when it is imported.
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(6 + 4 * tenants + 5)

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
endpoint = f"http://127.0.0.1:{port}"
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="AKIASETUPSETUPSETUP0", aws_secret_access_key="setup")
iam, s3, sts = boto3.client("iam", **kw), boto3.client("s3", **kw), boto3.client("sts", **kw)


def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


user = iam.create_user(UserName="platform")["User"]
key = iam.create_access_key(UserName="platform")["AccessKey"]
iam.put_user_policy(UserName="platform", PolicyName="platform", PolicyDocument=doc(
    {"Effect": "Allow", "Action": ["sts:AssumeRole", "s3:*"], "Resource": "*"}))
out = []
for i in range(tenants):
    bucket = f"moto-t{i}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="logo.png", Body=f"logo of tenant {i}".encode(), ContentType="image/png")
    trust = doc({"Effect": "Allow", "Principal": {"AWS": user["Arn"]}, "Action": "sts:AssumeRole",
                 "Condition": {"StringEquals": {"sts:ExternalId": f"ext-{i}"}}})
    role = iam.create_role(RoleName=f"reader-{i}", AssumeRolePolicyDocument=trust)["Role"]
    iam.put_role_policy(RoleName=f"reader-{i}", PolicyName="read", PolicyDocument=doc(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}))
    out.append({"bucket": bucket, "role_arn": role["Arn"], "external_id": f"ext-{i}"})
s3.create_bucket(Bucket="moto-own")
# A role that trusts the platform WITHOUT an external ID: what `bucketfront check` must flag.
iam.create_role(RoleName="unsafe", AssumeRolePolicyDocument=doc(
    {"Effect": "Allow", "Principal": {"AWS": user["Arn"]}, "Action": "sts:AssumeRole"}))
iam.put_role_policy(RoleName="unsafe", PolicyName="read", PolicyDocument=doc(
    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::moto-own/*"}))
for _ in range(100):
    try:
        sts.get_caller_identity()
    except Exception:
        break
else:
    sys.exit("moto never started enforcing authentication")
print(json.dumps({"endpoint": endpoint, "access_key": key["AccessKeyId"],
                  "secret_key": key["SecretAccessKey"], "tenants": out}), flush=True)
sys.stdin.read()
server.stop()
