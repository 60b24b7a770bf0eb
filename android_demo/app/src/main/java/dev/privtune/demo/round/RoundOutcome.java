package dev.privtune.demo.round;

import dev.privtune.core.protocol.UpdateReceipt;

/** What one participation attempt ended with; {@link #summary()} is what the UI shows. */
public final class RoundOutcome {
    /** How the attempt ended. */
    public enum Kind {
        /** The server has no open round. */
        NO_OPEN_ROUND,
        /** A round is open but this device was not drawn for it. */
        NOT_SELECTED,
        /** The round cannot be trained here (other bundle, unsupported seed method, expired). */
        NOT_SUPPORTED,
        /** The round would exceed the device's privacy budget; nothing was trained. */
        BUDGET_EXHAUSTED,
        /** The update was accepted (or had been already: same bytes, same receipt). */
        UPLOADED,
        /** The server refused the update (recorded in the outbox; not retried). */
        REJECTED,
        /** The server could not be reached after the retries; the update stays in the outbox. */
        PENDING
    }

    private final Kind kind;
    private final Long roundId;
    private final String detail;
    private final UpdateReceipt receipt;
    private final double localEpsilon;
    private final long steps;
    private final double localDelta;

    RoundOutcome(Kind kind, Long roundId, String detail, UpdateReceipt receipt, double localEpsilon, double localDelta, long steps) {
        this.kind = kind;
        this.roundId = roundId;
        this.detail = detail;
        this.receipt = receipt;
        this.localEpsilon = localEpsilon;
        this.steps = steps;
        this.localDelta = localDelta;
    }

    static RoundOutcome of(Kind kind, Long roundId, String detail) {
        return new RoundOutcome(kind, roundId, detail, null, Double.NaN, Double.NaN, 0);
    }

    /** How it ended. */
    public Kind kind() {
        return kind;
    }

    /** The round concerned, or null when there was none. */
    public Long roundId() {
        return roundId;
    }

    /** The server's or the app's explanation. */
    public String detail() {
        return detail;
    }

    /** The server's receipt for {@link Kind#UPLOADED}, else null. */
    public UpdateReceipt receipt() {
        return receipt;
    }

    /** The device's epsilon (RDP) reported with the update; NaN when nothing was uploaded. */
    public double localEpsilon() {
        return localEpsilon;
    }

    /** The delta of {@link #localEpsilon()}; NaN when nothing was uploaded. */
    public double localDelta() {
        return localDelta;
    }

    /** Local steps trained in this attempt (0 when the update came from the outbox). */
    public long steps() {
        return steps;
    }

    /** One line for the UI and logs. */
    public String summary() {
        String round = roundId == null ? "" : "round " + roundId + ": ";
        return kind.name() + " " + round + detail;
    }

    @Override
    public String toString() {
        return summary();
    }
}
