# One process of the platform as an ECS Fargate service: its task definition (the contract's command,
# environment names and port), its own task role holding only the access the contract gives it, its
# own execution role reading only its own secrets, a log group, a security group, and optionally
# autoscaling on the depth of the request queue it consumes.

data "aws_region" "current" {}

locals {
  full_name         = "${var.name_prefix}-${var.service_name}"
  needs_task_policy = length(var.sqs_url_arns) > 0 || var.archive_bucket_arn != null
  # The entry command writes the contract's configuration where VPP_CONFIG points, then runs the CLI.
  entry_script = "printf '%s' \"$${${var.config_toml_variable}}\" > \"$VPP_CONFIG\" && exec vpp \"$@\""
  port_mappings = var.port == null ? [] : [{
    name          = var.service_name
    containerPort = var.port
    protocol      = "tcp"
    appProtocol   = "grpc"
  }]
}

# -- logs ------------------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "this" {
  name              = "/openvpp/${var.name_prefix}/${var.service_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

# -- roles -----------------------------------------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${local.full_name}-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "PullImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
    resources = [var.image_repository_arn]
  }
  statement {
    # GetAuthorizationToken has no resource-level permissions.
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }
  dynamic "statement" {
    for_each = length(var.secret_arns) == 0 ? [] : [1]
    content {
      sid       = "ReadOwnSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = var.secret_arns
    }
  }
  dynamic "statement" {
    for_each = length(var.secret_arns) == 0 ? [] : [1]
    content {
      sid       = "DecryptOwnSecrets"
      actions   = ["kms:Decrypt"]
      resources = [var.kms_key_arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "start-task"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "task" {
  name               = "${local.full_name}-task"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "task" {
  count = local.needs_task_policy ? 1 : 0
  dynamic "statement" {
    # A service using SQS resolves the URLs of all four queues (workers/sqs.queue_urls).
    for_each = length(var.sqs_url_arns) == 0 ? [] : [1]
    content {
      sid       = "ResolveQueues"
      actions   = ["sqs:GetQueueUrl"]
      resources = var.sqs_url_arns
    }
  }
  dynamic "statement" {
    for_each = length(var.sqs_consume_arns) == 0 ? [] : [1]
    content {
      sid       = "ConsumeQueues"
      actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]
      resources = var.sqs_consume_arns
    }
  }
  dynamic "statement" {
    for_each = length(var.sqs_send_arns) == 0 ? [] : [1]
    content {
      sid       = "SendToQueues"
      actions   = ["sqs:SendMessage"]
      resources = var.sqs_send_arns
    }
  }
  dynamic "statement" {
    for_each = length(var.sqs_consume_arns) + length(var.sqs_send_arns) == 0 ? [] : [1]
    content {
      sid       = "EncryptedQueues"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["sqs.${data.aws_region.current.name}.amazonaws.com"]
      }
    }
  }
  dynamic "statement" {
    for_each = var.archive_bucket_arn == null ? [] : [1]
    content {
      sid       = "ArchiveObjects"
      actions   = ["s3:GetObject", "s3:PutObject"]
      resources = ["${var.archive_bucket_arn}/${var.archive_prefix}/*"]
    }
  }
  dynamic "statement" {
    for_each = var.archive_bucket_arn == null ? [] : [1]
    content {
      sid       = "ListArchive"
      actions   = ["s3:ListBucket"]
      resources = [var.archive_bucket_arn]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${var.archive_prefix}/*"]
      }
    }
  }
  dynamic "statement" {
    for_each = var.archive_bucket_arn == null ? [] : [1]
    content {
      sid       = "EncryptedArchive"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
      }
    }
  }
}

# Services without AWS access (gRPC services, the VPP worker) have a task role with no policy at all.
resource "aws_iam_role_policy" "task" {
  count  = local.needs_task_policy ? 1 : 0
  name   = "service-access"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task[0].json
}

# -- network ---------------------------------------------------------------------------------------

resource "aws_security_group" "this" {
  name        = local.full_name
  description = "${var.service_name} of ${var.name_prefix}"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "grpc" {
  count             = var.port == null ? 0 : 1
  security_group_id = aws_security_group.this.id
  description       = "gRPC clients inside the VPC"
  cidr_ipv4         = var.vpc_cidr_block
  ip_protocol       = "tcp"
  from_port         = var.port
  to_port           = var.port
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.this.id
  description       = "AWS APIs (SQS, S3, Secrets Manager, ECR, CloudWatch) over HTTPS"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "grpc_in_vpc" {
  for_each          = toset([for port in var.vpc_grpc_ports : tostring(port)])
  security_group_id = aws_security_group.this.id
  description       = "gRPC services of the platform inside the VPC"
  cidr_ipv4         = var.vpc_cidr_block
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
}

resource "aws_vpc_security_group_egress_rule" "temporal" {
  for_each          = var.temporal ? toset(var.temporal_cidrs) : toset([])
  security_group_id = aws_security_group.this.id
  description       = "Temporal frontend"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.temporal_port
  to_port           = var.temporal_port
}

resource "aws_vpc_security_group_egress_rule" "database" {
  count                        = var.database_security_group_id == null ? 0 : 1
  security_group_id            = aws_security_group.this.id
  description                  = "PostgreSQL"
  referenced_security_group_id = var.database_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = var.database_port
  to_port                      = var.database_port
}

resource "aws_vpc_security_group_ingress_rule" "database" {
  count                        = var.database_security_group_id == null ? 0 : 1
  security_group_id            = var.database_security_group_id
  description                  = "PostgreSQL from ${local.full_name}"
  referenced_security_group_id = aws_security_group.this.id
  ip_protocol                  = "tcp"
  from_port                    = var.database_port
  to_port                      = var.database_port
}

# -- task and service ------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  family                   = local.full_name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }
  volume {
    name = "state"
  }
  container_definitions = jsonencode([{
    name                   = var.service_name
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    user                   = var.container_user
    entryPoint             = ["sh", "-c", local.entry_script, "vpp"]
    command                = var.command
    portMappings           = local.port_mappings
    environment            = [for name in sort(keys(var.environment)) : { name = name, value = var.environment[name] }]
    secrets                = [for name in sort(keys(var.secrets)) : { name = name, valueFrom = var.secrets[name] }]
    mountPoints            = [{ sourceVolume = "state", containerPath = var.state_dir, readOnly = false }]
    stopTimeout            = 30
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = var.service_name
      }
    }
  }])
}

resource "aws_ecs_service" "this" {
  name                               = var.service_name
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  propagate_tags                     = "SERVICE"
  enable_execute_command             = false
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.this.id]
    assign_public_ip = false
  }
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  service_connect_configuration {
    enabled   = true
    namespace = var.service_connect_namespace_arn
    dynamic "service" {
      for_each = var.port == null ? [] : [var.port]
      content {
        port_name      = var.service_name
        discovery_name = var.service_name
        client_alias {
          port     = service.value
          dns_name = var.service_name
        }
      }
    }
  }
  dynamic "load_balancer" {
    for_each = var.target_group_arn == null ? [] : [var.target_group_arn]
    content {
      target_group_arn = load_balancer.value
      container_name   = var.service_name
      container_port   = var.port
    }
  }
  lifecycle {
    # Autoscaled services own their task count.
    ignore_changes = [desired_count]
  }
}

# -- autoscaling on queue depth --------------------------------------------------------------------

resource "aws_appautoscaling_target" "this" {
  count              = var.scale_on_queue_name == null ? 0 : 1
  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

resource "aws_appautoscaling_policy" "scale_out" {
  count              = var.scale_on_queue_name == null ? 0 : 1
  name               = "${local.full_name}-scale-out"
  service_namespace  = aws_appautoscaling_target.this[0].service_namespace
  resource_id        = aws_appautoscaling_target.this[0].resource_id
  scalable_dimension = aws_appautoscaling_target.this[0].scalable_dimension
  policy_type        = "StepScaling"
  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 60
    metric_aggregation_type = "Maximum"
    step_adjustment {
      metric_interval_lower_bound = 0
      metric_interval_upper_bound = var.backlog_per_step
      scaling_adjustment          = 1
    }
    step_adjustment {
      metric_interval_lower_bound = var.backlog_per_step
      scaling_adjustment          = 2
    }
  }
}

resource "aws_appautoscaling_policy" "scale_in" {
  count              = var.scale_on_queue_name == null ? 0 : 1
  name               = "${local.full_name}-scale-in"
  service_namespace  = aws_appautoscaling_target.this[0].service_namespace
  resource_id        = aws_appautoscaling_target.this[0].resource_id
  scalable_dimension = aws_appautoscaling_target.this[0].scalable_dimension
  policy_type        = "StepScaling"
  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 300
    metric_aggregation_type = "Maximum"
    step_adjustment {
      metric_interval_upper_bound = 0
      scaling_adjustment          = -1
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "backlog_high" {
  count               = var.scale_on_queue_name == null ? 0 : 1
  alarm_name          = "${local.full_name}-backlog-high"
  alarm_description   = "Requests waiting in ${var.scale_on_queue_name}: add ${var.service_name} tasks."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = var.scale_on_queue_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.backlog_high
  alarm_actions       = [aws_appautoscaling_policy.scale_out[0].arn]
}

resource "aws_cloudwatch_metric_alarm" "backlog_empty" {
  count               = var.scale_on_queue_name == null ? 0 : 1
  alarm_name          = "${local.full_name}-backlog-empty"
  alarm_description   = "No request waiting in ${var.scale_on_queue_name} for 15 minutes: remove a ${var.service_name} task."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = var.scale_on_queue_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "LessThanOrEqualToThreshold"
  threshold           = 0
  alarm_actions       = [aws_appautoscaling_policy.scale_in[0].arn]
}
