"""The local SQS endpoint (stack/sqs_endpoint.py): moto's SQS backend served as its own process, answering
boto3 like moto_server does, with moto's retention check answered the same way without rebuilding the queue's
attributes."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

from stack.ports import free_tcp_port
from stack.processes import http_answers
from stack.sqs_endpoint import MOTO_RETENTION_CHECK, QuietRequestHandler, _retained

REPO = Path(__file__).resolve().parent.parent
# Upper bound on waiting for the endpoint to answer (s); not an assertion on speed.
PATIENCE_S = 30.0


@pytest.fixture
def endpoint() -> Iterator[str]:
    """``python -m stack.sqs_endpoint`` on a free port, as the local stack starts it; its URL."""
    port = free_tcp_port()
    process = subprocess.Popen([sys.executable, "-m", "stack.sqs_endpoint", "-H", "127.0.0.1", "-p", str(port)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PATIENCE_S
        while not http_answers(url + "/"):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the SQS endpoint did not answer"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        output = process.communicate(timeout=PATIENCE_S)[0]
        assert process.returncode == 0, output
        # Quiet: no line per request (a request moto fails would still be logged).
        assert "POST /" not in output and "GET /" not in output, output


def test_the_endpoint_answers_boto3_like_sqs(endpoint: str) -> None:
    """Queues, batch sends (boto3 checks each message's MD5), a long-poll receive, batch deletes, attributes
    and redrive: the calls the pools and the relay make."""
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="ap-southeast-2", aws_access_key_id="local",
                       aws_secret_access_key="local")
    dead = sqs.create_queue(QueueName="dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName="requests", Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": f'{{"deadLetterTargetArn": "{dead_arn}", "maxReceiveCount": "1"}}'})["QueueUrl"]
    bodies = [f"task {index} " + "x" * 20_000 for index in range(9)]
    sent = sqs.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(index), "MessageBody": body} for index, body in enumerate(bodies)])
    assert len(sent["Successful"]) == 9 and not sent.get("Failed")
    received: list[dict[str, object]] = []
    while len(received) < 9:
        received += sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                        AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
    assert sorted(str(message["Body"]) for message in received) == sorted(bodies)
    deleted = sqs.delete_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(index), "ReceiptHandle": str(message["ReceiptHandle"])} for index, message in enumerate(received)])
    assert len(deleted["Successful"]) == 9
    counts = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == counts["ApproximateNumberOfMessagesNotVisible"] == "0"
    # Not deleted within its visibility timeout, received once already: redriven to the dead-letter queue.
    sqs.send_message(QueueUrl=queue, MessageBody="poison")
    [first] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    assert first["Body"] == "poison"
    assert sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2).get("Messages", []) == []
    [letter] = sqs.receive_message(QueueUrl=dead, WaitTimeSeconds=1)["Messages"]
    assert letter["Body"] == "poison"


def test_the_retention_check_answers_as_motos_own() -> None:
    """A message is handed out while it is within its queue's retention period, and not after: the same
    answer as moto's check, for a fresh message and for one older than the period."""
    backend = sqs_backends[DEFAULT_ACCOUNT_ID]["ap-southeast-2"]
    name = f"retention-{free_tcp_port()}"
    queue = backend.create_queue(name, MessageRetentionPeriod="60")
    try:
        fresh = backend.send_message(name, "fresh")
        old = backend.send_message(name, "old")
        old.sent_timestamp = int((time.time() - 61) * 1000)
        moto_check = MOTO_RETENTION_CHECK
        assert moto_check is not None, "this moto release has no retention check to replace"
        assert _retained(backend, name, fresh) is moto_check(backend, name, fresh) is True
        assert _retained(backend, name, old) is moto_check(backend, name, old) is False
        assert queue.message_retention_period == 60
    finally:
        backend.delete_queue(name)


def test_responses_leave_without_waiting_for_an_ack() -> None:
    """Nagle's algorithm is off on the endpoint's connections (a response's body does not wait for the
    client's ACK of its headers)."""
    assert QuietRequestHandler.disable_nagle_algorithm is True


def test_a_connection_is_kept_for_the_next_request(endpoint: str) -> None:
    """Requests whose body length is known are answered without ``Connection: close``, so one connection serves
    one request after another (werkzeug alone closes every connection); a chunked request's connection closes."""
    host, port = endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=PATIENCE_S)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        for name in ("first", "second", "third"):  # the same socket each time
            connection.request("POST", "/", urlencode({"Action": "CreateQueue", "QueueName": name,
                                                       "Version": "2012-11-05"}), headers=form)
            response = connection.getresponse()
            assert response.status == 200 and name in response.read().decode()
            assert (response.getheader("Connection") or "").lower() != "close"
        connection.request("POST", "/", iter([urlencode({"Action": "ListQueues", "Version": "2012-11-05"}).encode()]),
                           headers=form, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 200 and "third" in response.read().decode()
        assert (response.getheader("Connection") or "").lower() == "close"
    finally:
        connection.close()
