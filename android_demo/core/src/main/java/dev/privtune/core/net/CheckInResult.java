package dev.privtune.core.net;

import dev.privtune.core.protocol.RoundConfig;

/** The answer to a check-in: the open round (only when this device was selected) and the selection. */
public final class CheckInResult {
    private final RoundConfig roundConfig;
    private final boolean selected;
    private final Long openRoundId;

    CheckInResult(RoundConfig roundConfig, boolean selected, Long openRoundId) {
        this.roundConfig = roundConfig;
        this.selected = selected;
        this.openRoundId = openRoundId;
    }

    /** The round to train, or null when none is open or this device was not selected. */
    public RoundConfig roundConfig() {
        return roundConfig;
    }

    /** Whether the server drew this device for the open round. */
    public boolean selected() {
        return selected;
    }

    /** The open round's id even when not selected; null when no round is open (or an older server). */
    public Long openRoundId() {
        return openRoundId;
    }
}
