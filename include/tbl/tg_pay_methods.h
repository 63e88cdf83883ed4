/*
 * tbl/tg_pay_methods.h - the payment methods a profile may name.
 *
 * TG_PAY_METHOD(ENUM, name, description).  Generates enum tg_pay_method
 * (TG_PAY_<ENUM>) and the words of a profile's "method" field
 * (tbl/tg_profile_fields.h) that tollctl accepts, the refill worker reads
 * and the gateway is given (tg_refill_wire.h).  A wire format: only grow at
 * the end, never rename.
 */
TG_PAY_METHOD(CARD, card, "a credit or debit card")
TG_PAY_METHOD(PAYPAL, paypal, "a PayPal account")
