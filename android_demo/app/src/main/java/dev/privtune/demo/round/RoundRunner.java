package dev.privtune.demo.round;

import dev.privtune.core.device.LocalTrainer;
import dev.privtune.core.device.TrainingResult;
import dev.privtune.core.dp.LocalLedger;
import dev.privtune.core.dp.UpdateBuilder;
import dev.privtune.core.net.AggregatorClient;
import dev.privtune.core.net.AggregatorException;
import dev.privtune.core.net.CheckInResult;
import dev.privtune.core.net.Outbox;
import dev.privtune.core.net.UploadClient;
import dev.privtune.core.net.UploadException;
import dev.privtune.core.net.UploadRejectedException;
import dev.privtune.core.net.UploadUnavailableException;
import dev.privtune.core.protocol.AdapterUpdate;
import dev.privtune.core.protocol.ErrorBody;
import dev.privtune.core.protocol.RoundConfig;
import dev.privtune.core.protocol.Tensor;
import dev.privtune.core.protocol.UpdateCodec;
import dev.privtune.core.protocol.UpdateReceipt;
import dev.privtune.demo.privacy.RdpAccountant;
import dev.privtune.demo.runtime.OpenBundle;
import dev.privtune.demo.train.LocalDpLoop;
import dev.privtune.demo.train.PrivacyBudgetExceededException;
import dev.privtune.demo.train.RoundNotSupportedException;
import dev.privtune.demo.train.RoundSupport;
import java.io.IOException;
import java.util.Locale;
import java.util.Map;

/**
 * One participation attempt ({@code ondevice/device.py}'s {@code participate}): check in; if selected,
 * either deliver the round's update already in the outbox (same bytes, same idempotency key, never
 * retrained) or check the round, download the global adapter, train locally with DP, clip the delta,
 * store the encoded update in the outbox BEFORE the first upload attempt, and deliver it.
 *
 * <p>The local epsilon sent with the update is {@link RdpAccountant}'s (an upper bound; Python devices
 * send PLD's tighter figure). The server does not use it for its own accounting.
 */
public final class RoundRunner {
    /** Seconds since the epoch (replaceable in tests). */
    public interface Clock {
        /** Now, in seconds. */
        double nowSeconds();
    }

    /** The system clock. */
    public static final Clock SYSTEM_CLOCK = new Clock() {
        @Override
        public double nowSeconds() {
            return System.currentTimeMillis() / 1000.0;
        }
    };

    private final AggregatorClient aggregator;
    private final UploadClient uploads;
    private final String deviceId;
    private final OpenBundle bundle;
    private final LocalLedger ledger;
    private final TrainerFactory trainers;
    private final double deviceEpsilonBudget;
    private final Clock clock;

    /**
     * @param uploads the upload client (its outbox holds encoded updates until delivered)
     * @param deviceEpsilonBudget the device's own epsilon cap (infinity for none)
     */
    public RoundRunner(AggregatorClient aggregator, UploadClient uploads, String deviceId, OpenBundle bundle,
            LocalLedger ledger, TrainerFactory trainers, double deviceEpsilonBudget, Clock clock) {
        this.aggregator = aggregator;
        this.uploads = uploads;
        this.deviceId = deviceId;
        this.bundle = bundle;
        this.ledger = ledger;
        this.trainers = trainers;
        this.deviceEpsilonBudget = deviceEpsilonBudget;
        this.clock = clock;
    }

    /**
     * Runs one attempt.
     *
     * @throws AggregatorException when check-in or the adapter download fails
     * @throws IOException when training, the ledger or the outbox fail
     * @throws UploadException when the server's answer breaks the protocol (the update stays pending)
     */
    public RoundOutcome runOnce() throws AggregatorException, IOException, UploadException, InterruptedException {
        CheckInResult checkIn = aggregator.checkIn();
        RoundConfig round = checkIn.roundConfig();
        if (round == null) {
            if (checkIn.openRoundId() != null) {
                return RoundOutcome.of(RoundOutcome.Kind.NOT_SELECTED, checkIn.openRoundId(), "this device was not drawn for the open round");
            }
            return RoundOutcome.of(RoundOutcome.Kind.NO_OPEN_ROUND, null, "the server has no open round");
        }
        Long roundId = Long.valueOf(round.roundId());
        Outbox outbox = uploads.outbox();
        ErrorBody rejected = outbox.rejection(round.roundId());
        if (rejected != null) {
            return RoundOutcome.of(RoundOutcome.Kind.REJECTED, roundId, "rejected earlier: " + rejected.reason().code() + ": " + rejected.message());
        }
        if (outbox.get(round.roundId()) != null) {
            AdapterUpdate stored = UpdateCodec.decode(outbox.get(round.roundId()));
            return deliver(round, stored.localEpsilon(), 0);
        }
        try {
            RoundSupport.check(round, bundle.manifest(), clock.nowSeconds());
            LocalDpLoop.checkBudget(round, ledger, deviceEpsilonBudget);
        } catch (RoundNotSupportedException e) {
            return RoundOutcome.of(RoundOutcome.Kind.NOT_SUPPORTED, roundId, e.getMessage());
        } catch (PrivacyBudgetExceededException e) {
            return RoundOutcome.of(RoundOutcome.Kind.BUDGET_EXHAUSTED, roundId, e.getMessage());
        }
        Map<String, Tensor> global = aggregator.fetchAdapter(round.globalAdapterVersion(), bundle.manifest().trainable());
        LocalTrainer trainer = trainers.open();
        TrainingResult result = trainer.train(round, global, ledger);
        double delta = round.dp().localDelta();
        double epsilon = RdpAccountant.epsilon(ledger.steps(), delta);
        AdapterUpdate update = UpdateBuilder.build(round, deviceId, global, result.localParams(), epsilon, delta, null);
        outbox.put(round.roundId(), UpdateCodec.encode(update));
        return deliver(round, epsilon, result.steps().size());
    }

    private RoundOutcome deliver(RoundConfig round, double epsilon, long steps)
            throws IOException, UploadException, InterruptedException {
        Long roundId = Long.valueOf(round.roundId());
        try {
            UpdateReceipt receipt = uploads.deliver(round.roundId());
            String detail = String.format(Locale.ROOT, "accepted, update sha256 %s..., local epsilon <= %.3f (RDP, delta=%g)",
                    receipt.updateSha256().substring(0, 12), epsilon, round.dp().localDelta());
            return new RoundOutcome(RoundOutcome.Kind.UPLOADED, roundId, detail, receipt, epsilon, round.dp().localDelta(), steps);
        } catch (UploadRejectedException e) {
            ErrorBody error = e.error();
            return RoundOutcome.of(RoundOutcome.Kind.REJECTED, roundId, "HTTP " + e.status() + " "
                    + (error == null ? e.getMessage() : error.reason().code() + ": " + error.message()));
        } catch (UploadUnavailableException e) {
            return RoundOutcome.of(RoundOutcome.Kind.PENDING, roundId, "server unreachable, update kept in the outbox: " + e.getMessage());
        }
    }
}
