/*
 * tbl/tg_profile_fields.h - the fields of a customer profile, the hash
 * TG_PROFILE_PREFIX "<account>" in the refill Redis (docs/REFILL.md).
 *
 * TG_PROFILE_FIELD(ENUM, name, required, description).  Generates enum
 * tg_profile_field (TG_PF_<ENUM>) and the field names tollctl writes
 * (`tollctl profile`) and the refill worker reads (tools/refill_work.c; a
 * profile without a required field cannot be charged: the refill fails with
 * no-payment-method, or is not mailed without an email).  A wire format:
 * only grow at the end, never rename.
 */
TG_PROFILE_FIELD(EMAIL, email, 1, "the billing contact: receipts and failure notices go there")
TG_PROFILE_FIELD(METHOD, method, 1, "the payment method on file (tbl/tg_pay_methods.h)")
TG_PROFILE_FIELD(TOKEN, token, 1, "the payment method's id at the gateway")
TG_PROFILE_FIELD(NAME, name, 0, "the customer's name, for the mails")
