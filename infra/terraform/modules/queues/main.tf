# The SQS queues of the contract (names, visibility timeouts, retention and redrive all come from
# contract.json: nothing here names a queue), TLS-only queue policies, and alarms on the dead-letter
# queue's depth and on the age of the oldest message of every other queue.

locals {
  by_key = { for queue in var.queues : queue.key => queue }
  # Every queue but the dead-letter queue; those with a max_receive_count redrive to it.
  sources   = { for key, queue in local.by_key : key => queue if key != var.dead_letter_key }
  redriven  = { for key, queue in local.sources : key => queue if queue.max_receive_count != null }
  dead_spec = local.by_key[var.dead_letter_key]
}

resource "aws_sqs_queue" "dead_letters" {
  name                              = local.dead_spec.name
  visibility_timeout_seconds        = local.dead_spec.visibility_timeout_s
  message_retention_seconds         = local.dead_spec.message_retention_s
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = 300
}

resource "aws_sqs_queue" "this" {
  for_each                          = local.sources
  name                              = each.value.name
  visibility_timeout_seconds        = each.value.visibility_timeout_s
  message_retention_seconds         = each.value.message_retention_s
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = 300
  redrive_policy = each.value.max_receive_count == null ? null : jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letters.arn
    maxReceiveCount     = each.value.max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "dead_letters" {
  queue_url = aws_sqs_queue.dead_letters.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [for key in keys(local.redriven) : aws_sqs_queue.this[key].arn]
  })
}

locals {
  all_queues = merge({ (var.dead_letter_key) = aws_sqs_queue.dead_letters }, aws_sqs_queue.this)
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.all_queues
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [each.value.arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "tls_only" {
  for_each  = local.all_queues
  queue_url = each.value.id
  policy    = data.aws_iam_policy_document.tls_only[each.key].json
}

resource "aws_cloudwatch_metric_alarm" "dead_letter_depth" {
  alarm_name          = "${aws_sqs_queue.dead_letters.name}-depth"
  alarm_description   = "Messages in the dead-letter queue: a worker could not process them (see their attributes)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead_letters.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.dead_letter_depth_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "message_age" {
  for_each            = aws_sqs_queue.this
  alarm_name          = "${each.value.name}-oldest-message-age"
  alarm_description   = "The oldest message of ${each.value.name} is older than the cycle waits for an answer (s)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = each.value.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.max_message_age_s
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]
}
