from __future__ import annotations

from localcluster.tokens import service_account_token, user_of


def test_tokens_name_their_service_account() -> None:
    token = service_account_token("s3cret", "tpengine", "traffic-manager")
    assert user_of("s3cret", token) == "system:serviceaccount:tpengine:traffic-manager"
    assert user_of("s3cret", "s3cret") == "admin"
    assert user_of("other", token) is None
    forged = token[:-1] + ("1" if token[-1] == "0" else "0")
    assert user_of("s3cret", forged) is None
    assert user_of("s3cret", "sa.a.b") is None
    assert user_of("s3cret", "garbage") is None
