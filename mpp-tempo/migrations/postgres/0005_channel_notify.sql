-- Wake-ups across instances: a stream waiting for a voucher on one instance learns that the
-- voucher was accepted on another. Every change that can free headroom or end a stream (a
-- higher voucher, a larger deposit, a state change, a reservation released) notifies
-- `mpp_session_channels` with the channel id, delivered when the writing transaction commits.
-- Charges and reservations, the frequent writes, notify nobody.
CREATE FUNCTION mpp_notify_session_channel() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('mpp_session_channels', NEW.channel_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER session_channels_notify
    AFTER UPDATE ON session_channels
    FOR EACH ROW
    WHEN (NEW.highest_voucher > OLD.highest_voucher
          OR NEW.deposit > OLD.deposit
          OR NEW.state <> OLD.state
          OR NEW.reserved < OLD.reserved)
    EXECUTE FUNCTION mpp_notify_session_channel();
