variable "queues" {
  description = "The contract's queues (key, name, visibility_timeout_s, message_retention_s, max_receive_count)."
  type = list(object({
    key                  = string
    name                 = string
    visibility_timeout_s = number
    message_retention_s  = number
    max_receive_count    = optional(number)
  }))
}

variable "dead_letter_key" {
  description = "Contract key of the dead-letter queue (workers/sqs.QueueUrls field name)."
  type        = string
  default     = "dead_letters"
}

variable "kms_key_arn" {
  description = "KMS key encrypting the queues."
  type        = string
}

variable "max_message_age_s" {
  description = "Alarm when a queue's oldest message is older than this (s): the contract's max_message_age_s."
  type        = number
}

variable "dead_letter_depth_threshold" {
  description = "Alarm when the dead-letter queue holds more messages than this."
  type        = number
  default     = 0
}

variable "alarm_topic_arn" {
  description = "SNS topic the alarms notify."
  type        = string
}
